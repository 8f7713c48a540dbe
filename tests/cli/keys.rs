//! `pasarela keys create|list|revoke` on the store.

use crate::command::TestCli;

#[test]
fn create_shows_the_key_once_and_list_never_shows_it() {
    let cli = TestCli::new();
    let run = cli.keys(&[
        "create",
        "team-a",
        "--models",
        "gpt-a,gpt-b",
        "--rpm",
        "60",
        "--max-concurrent",
        "2",
        "--budget",
        "12.5",
        "--budget-period",
        "month",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let key = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("key:  "))
        .expect("the key is printed")
        .to_owned();
    assert!(key.starts_with("sk-pasarela-") && key.len() > 40, "{key}");
    assert!(run.stdout.contains("models=gpt-a,gpt-b"), "{}", run.stdout);

    let list = cli.keys(&["list"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    assert!(list.stdout.contains("team-a"), "{}", list.stdout);
    assert!(
        list.stdout.contains(&key[..16]),
        "the prefix is shown: {}",
        list.stdout
    );
    assert!(
        !list.stdout.contains(&key),
        "the key is never listed: {}",
        list.stdout
    );
    assert!(list.stdout.contains("rpm=60") && list.stdout.contains("budget=12.5USD/month"));

    let revoke = cli.keys(&["revoke", "team-a"]);
    assert_eq!(revoke.code, Some(0), "{}", revoke.stderr);
    assert!(cli.keys(&["list"]).stdout.contains("revoked"));
    let again = cli.keys(&["revoke", "team-a"]);
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("team-a"), "{}", again.stderr);
}

#[test]
fn create_refuses_a_name_already_active() {
    let cli = TestCli::new();
    assert_eq!(cli.keys(&["create", "dup"]).code, Some(0));
    let second = cli.keys(&["create", "dup"]);
    assert_eq!(second.code, Some(1));
    assert!(second.stderr.contains("dup"), "{}", second.stderr);
    assert!(!second.stdout.contains("key:"), "{}", second.stdout);
}
