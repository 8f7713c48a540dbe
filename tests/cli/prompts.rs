//! `pasarela prompts …` on the embedded SQLite store.

use sha2::{Digest, Sha256};

use crate::command::{AUTHOR, TestCli};

const SHIPPED: [&str; 3] = ["classify-sentiment", "greeting", "summarize"];

/// The shipped prompts pushed once, then `greeting` edited and pushed again (v2).
fn with_two_greetings() -> TestCli {
    let cli = TestCli::new();
    cli.ok(&["push"]);
    cli.edit("greeting.yaml", "Say hello to", "Say hi to");
    cli.ok(&["push", "-m", "shorter"]);
    cli
}

/// The value of a `# key: value` line of `show`'s header.
fn header<'a>(show: &'a str, key: &str) -> &'a str {
    show.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}:")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{show}"))
        .trim()
}

/// The cells of `list`'s row for `name`.
fn list_row<'a>(list: &'a str, name: &str) -> Vec<&'a str> {
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{list}"))
}

#[test]
fn pushing_the_shipped_prompts_creates_version_1_of_each_and_pushing_again_changes_nothing() {
    let cli = TestCli::new();
    let first = cli.ok(&["push"]);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 3, "{first}");
    for (line, name) in lines.iter().zip(SHIPPED) {
        let prefix = format!("created {name} v1 (sha256 ");
        assert!(line.starts_with(&prefix) && line.ends_with("…)"), "{line}");
    }
    let again = cli.ok(&["push"]);
    let expected: String = SHIPPED
        .iter()
        .map(|n| format!("unchanged {n} v1\n"))
        .collect();
    assert_eq!(again, expected);

    let list = cli.ok(&["list"]);
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "LATEST", "LABELS", "LAST", "CHANGE"]);
    for name in SHIPPED {
        assert_eq!(
            list_row(&list, name)[..3],
            [name, "1", "latest=1"],
            "{list}"
        );
    }
}

#[test]
fn editing_a_file_and_pushing_creates_version_2_and_moves_latest() {
    let cli = TestCli::new();
    cli.ok(&["push"]);
    cli.edit("greeting.yaml", "Say hello to", "Say hi to");
    let out = cli.ok(&["push", "--message", "shorter"]);
    assert!(out.contains("unchanged classify-sentiment v1\n"), "{out}");
    assert!(out.contains("created greeting v2 (sha256 "), "{out}");
    assert!(out.contains("unchanged summarize v1\n"), "{out}");

    let list = cli.ok(&["list"]);
    assert_eq!(
        list_row(&list, "greeting")[..3],
        ["greeting", "2", "latest=2"],
        "{list}"
    );
    let show = cli.ok(&["show", "greeting@latest"]);
    assert_eq!(header(&show, "version"), "2");
    assert_eq!(header(&show, "message"), "shorter");
    assert!(show.contains("Say hi to {{ name }}."), "{show}");
}

#[test]
fn a_bad_file_fails_the_whole_push_naming_file_line_and_key_and_writes_nothing() {
    let cli = TestCli::new();
    cli.ok(&["push"]);
    // A change that a push would store, and beside it a file that must stop the push.
    cli.edit("greeting.yaml", "Say hello to", "Say hi to");
    std::fs::write(
        cli.prompt_file("broken.yaml"),
        "name: broken\ntemprature: 0.2\nmessages: [{role: user, content: hi}]\n",
    )
    .unwrap();
    let error = cli.fails(&["push"]);
    assert!(
        error.contains("broken.yaml") && error.contains("line 2") && error.contains("temprature"),
        "{error}"
    );
    let list = cli.ok(&["list"]);
    assert!(!list.contains("broken"), "{list}");
    assert_eq!(
        list_row(&list, "greeting")[..3],
        ["greeting", "1", "latest=1"],
        "greeting was pushed anyway: {list}"
    );
}

#[test]
fn pushing_an_empty_directory_is_an_error() {
    let cli = TestCli::new();
    let empty = cli.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let error = cli.fails(&["push", empty.to_str().unwrap()]);
    assert!(error.contains("no prompt files in"), "{error}");
}

#[test]
fn moving_a_protected_label_needs_force_and_the_error_says_so() {
    let cli = with_two_greetings();
    let error = cli.fails(&["label", "greeting", "1", "production"]);
    assert!(
        error.contains("`production` is protected") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(
        cli.ok(&["label", "greeting", "1", "production", "--force"]),
        "production: unset → 1\n"
    );
    assert_eq!(
        cli.ok(&["label", "greeting", "2", "production", "--force"]),
        "production: 1 → 2\n"
    );
    assert_eq!(
        cli.ok(&["label", "greeting", "2", "production", "--force"]),
        "production already at 2\n"
    );
    // Labels that are not protected move without it; a label names the version to use.
    assert_eq!(
        cli.ok(&["label", "greeting", "production", "staging"]),
        "staging: unset → 2\n"
    );
}

#[test]
fn latest_cannot_be_moved_by_hand() {
    let cli = with_two_greetings();
    let error = cli.fails(&["label", "greeting", "1", "latest", "--force"]);
    assert!(error.contains("`latest`"), "{error}");
}

#[test]
fn rollback_moves_a_label_back_to_its_previous_version() {
    let cli = with_two_greetings();
    cli.ok(&["label", "greeting", "1", "staging"]);
    cli.ok(&["label", "greeting", "2", "staging"]);
    assert_eq!(
        cli.ok(&["rollback", "greeting", "staging"]),
        "staging: 2 → 1\n"
    );
    assert_eq!(
        header(&cli.ok(&["show", "greeting@staging"]), "version"),
        "1"
    );

    cli.ok(&["label", "greeting", "1", "production", "--force"]);
    cli.ok(&["label", "greeting", "2", "production", "--force"]);
    let error = cli.fails(&["rollback", "greeting", "production"]);
    assert!(error.contains("--force"), "{error}");
    assert_eq!(
        cli.ok(&["rollback", "greeting", "production", "--force"]),
        "production: 2 → 1\n"
    );
    let error = cli.fails(&["rollback", "greeting", "canary"]);
    assert!(
        error.contains("label `canary`") && error.contains("never been set"),
        "{error}"
    );
}

#[test]
fn history_lists_pushes_and_moves_with_who_made_each() {
    let cli = with_two_greetings();
    cli.ok(&[
        "label",
        "greeting",
        "1",
        "production",
        "--force",
        "--author",
        "bob",
    ]);
    let history = cli.ok(&["history", "greeting"]);
    let mut lines = history.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TIME", "LABEL", "MOVE", "BY", "CAUSE"]);
    // The time (date, clock, `UTC`) skipped: label, from, →, to, by, cause.
    let rows: Vec<Vec<&str>> = lines
        .map(|l| l.split_whitespace().skip(3).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["latest", "unset", "→", "1", AUTHOR, "push"],
            vec!["latest", "1", "→", "2", AUTHOR, "push"],
            vec!["production", "unset", "→", "1", "bob", "move"],
        ],
        "{history}"
    );
}

#[test]
fn show_resolves_labels_and_versions_and_prints_the_stored_json_on_request() {
    let cli = with_two_greetings();
    let v1 = cli.ok(&["show", "greeting#1"]);
    assert_eq!(header(&v1, "prompt"), "greeting");
    assert_eq!(header(&v1, "version"), "1");
    assert_eq!(header(&v1, "labels"), "(none)");
    assert_eq!(header(&v1, "author"), AUTHOR);
    assert!(v1.contains("\nname: greeting\n"), "{v1}");
    assert!(v1.contains("content: Say hello to {{ name }}."), "{v1}");

    let latest = cli.ok(&["show", "greeting@latest"]);
    assert_eq!(header(&latest, "version"), "2");
    assert_eq!(header(&latest, "labels"), "latest");

    // The stored JSON is what the version's hash is taken of.
    let json = cli.ok(&["show", "greeting#2", "--json"]);
    let json = json.strip_suffix('\n').unwrap();
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(value["messages"][1]["content"], "Say hi to {{ name }}.");
    assert_eq!(hex::encode(Sha256::digest(json)), header(&latest, "sha256"));

    // A bare name means `production`, which nothing has been labelled yet.
    let error = cli.fails(&["show", "greeting"]);
    assert!(
        error.contains("no label `production`") && error.contains("greeting@latest"),
        "{error}"
    );
}

#[test]
fn diff_prints_the_changed_line_with_minus_and_plus() {
    let cli = with_two_greetings();
    let diff = cli.ok(&["diff", "greeting", "1", "latest"]);
    let mut lines = diff.lines();
    assert_eq!(lines.next(), Some("--- greeting#1"));
    assert_eq!(lines.next(), Some("+++ greeting#2 (latest)"));
    let changed: Vec<&str> = lines.filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        changed,
        [
            "-  content: Say hello to {{ name }}.",
            "+  content: Say hi to {{ name }}."
        ],
        "{diff}"
    );
    assert!(
        !diff.contains('\x1b'),
        "colour when stdout is not a terminal"
    );
    assert!(diff.contains("\n name: greeting\n"), "{diff}");
}

#[test]
fn pull_then_push_creates_nothing_new() {
    let cli = with_two_greetings();
    // Into a directory of its own: the file is written afresh.
    let elsewhere = cli.path().join("pulled");
    let out = cli.ok(&["pull", "greeting@latest", elsewhere.to_str().unwrap()]);
    let written = elsewhere.join("greeting.yaml");
    assert_eq!(out, format!("wrote {} (greeting v2)\n", written.display()));
    assert_eq!(
        cli.ok(&["push", elsewhere.to_str().unwrap()]),
        "unchanged greeting v2\n"
    );
    // Into the prompts directory, whose file already holds that content: left as it is.
    let out = cli.ok(&["pull", "greeting#2"]);
    assert!(out.starts_with("unchanged "), "{out}");
    assert_eq!(cli.ok(&["push"]).matches("unchanged").count(), 3);
}

#[test]
fn pulling_an_older_version_overwrites_the_yaml_file_and_prints_what_changed() {
    let cli = with_two_greetings();
    let out = cli.ok(&["pull", "greeting#1"]);
    assert!(
        out.starts_with("updated ") && out.contains("to greeting v1:\n"),
        "{out}"
    );
    assert!(
        out.contains("+  content: Say hello to {{ name }}.\n"),
        "{out}"
    );
    let file = std::fs::read_to_string(cli.prompt_file("greeting.yaml")).unwrap();
    assert!(file.contains("Say hello to"), "{file}");
    // Pushing it back is a new version with version 1's content (a revert), same hash.
    let pushed = cli.ok(&["push", cli.prompt_file("greeting.yaml").to_str().unwrap()]);
    let v1 = cli.ok(&["show", "greeting#1"]);
    let short = &header(&v1, "sha256")[..12];
    assert_eq!(pushed, format!("created greeting v3 (sha256 {short}…)\n"));
}

#[test]
fn pull_replaces_a_markdown_prompt_only_with_force() {
    let cli = TestCli::new();
    cli.ok(&["push"]);
    cli.edit(
        "summarize.md",
        "Reply with the summary only.",
        "Reply with the summary.",
    );
    cli.ok(&["push"]);
    let error = cli.fails(&["pull", "summarize#1"]);
    assert!(
        error.contains("Markdown") && error.contains("--force"),
        "{error}"
    );
    assert!(cli.prompt_file("summarize.md").exists());

    let out = cli.ok(&["pull", "summarize#1", "--force"]);
    assert!(out.starts_with("replaced "), "{out}");
    assert!(!cli.prompt_file("summarize.md").exists());
    assert!(cli.prompt_file("summarize.yaml").exists());
    // The YAML file holds version 1's content exactly.
    let pushed = cli.ok(&["push"]);
    let v1 = cli.ok(&["show", "summarize#1"]);
    let short = &header(&v1, "sha256")[..12];
    assert!(
        pushed.contains(&format!("created summarize v3 (sha256 {short}…)")),
        "{pushed}"
    );
}

#[test]
fn pull_does_not_overwrite_another_prompts_file_without_force() {
    let cli = TestCli::new();
    cli.ok(&["push"]);
    let elsewhere = cli.path().join("pulled");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("greeting.yaml"), "not: a prompt\n").unwrap();
    let error = cli.fails(&["pull", "greeting@latest", elsewhere.to_str().unwrap()]);
    assert!(error.contains("--force"), "{error}");
    cli.ok(&[
        "pull",
        "greeting@latest",
        elsewhere.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(
        cli.ok(&["push", elsewhere.to_str().unwrap()]),
        "unchanged greeting v1\n"
    );
}

#[test]
fn unknown_prompts_versions_and_labels_are_named_clearly() {
    let cli = with_two_greetings();
    for args in [
        &["show", "nope"][..],
        &["show", "nope#1"],
        &["diff", "nope", "1", "2"],
        &["label", "nope", "1", "staging"],
        &["rollback", "nope", "staging"],
        &["history", "nope"],
        &["pull", "nope@latest"],
    ] {
        assert_eq!(cli.fails(args), "error: no prompt named `nope`", "{args:?}");
    }
    assert_eq!(
        cli.fails(&["show", "greeting#9"]),
        "error: prompt `greeting` has no version 9: its latest is 2"
    );
    assert_eq!(
        cli.fails(&["diff", "greeting", "1", "canary"]),
        "error: prompt `greeting` has no label `canary`: its labels are latest"
    );
}

#[test]
fn the_author_comes_from_git_then_user_when_not_given() {
    let git_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(git_config.path(), "[user]\n\tname = Grace Git\n").unwrap();
    let cli = TestCli::new()
        .env("PASARELA_AUTHOR", None)
        .env("GIT_CONFIG_NOSYSTEM", Some("1"))
        .env("GIT_CONFIG_GLOBAL", git_config.path().to_str())
        .env("USER", Some("uma"));
    cli.ok(&["push", cli.prompt_file("greeting.yaml").to_str().unwrap()]);
    assert_eq!(
        header(&cli.ok(&["show", "greeting#1"]), "author"),
        "Grace Git"
    );

    let cli = cli.env("GIT_CONFIG_GLOBAL", Some("/dev/null"));
    cli.ok(&["push", cli.prompt_file("summarize.md").to_str().unwrap()]);
    assert_eq!(header(&cli.ok(&["show", "summarize#1"]), "author"), "uma");
}

#[test]
fn the_data_dir_flag_chooses_where_the_store_lives() {
    let cli = TestCli::new();
    let data = cli.path().join("elsewhere");
    cli.ok(&["push", "--data-dir", data.to_str().unwrap()]);
    assert!(data.join("pasarela.db").is_file());
    assert!(!cli.path().join("data").exists());
}

#[test]
fn prompts_commands_never_load_the_configured_local_models() {
    // The config names a model file that does not exist (see `TestCli::new`).
    let cli = TestCli::new();
    let run = cli.prompts(&["push"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(cli.ok(&["list"]).lines().count(), 4);
}
