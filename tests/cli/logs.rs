//! `pasarela logs export|list` on traffic that a real gateway logged in the same store: the
//! gateway runs in this process against the stand-in upstream, stops (flushing its log), and
//! the binary reads what it wrote.

use std::net::SocketAddr;

use pasarela::config::Config;
use pasarela::server::Application;
use serde_json::{Value, json};

use crate::command::TestCli;
use crate::openai_upstream::{OpenAiUpstream, Reply};

/// Sends `requests` through a gateway on `cli`'s store that keeps every body except those of
/// the key `unsampled`, then stops it.
async fn serve_and_log(cli: &TestCli, up: &OpenAiUpstream, requests: &[(Option<&str>, Value)]) {
    let toml = format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{base}"

[routes.gpt-test]
deployments = [{{ provider = "up", model = "upstream-model" }}]

[store]
data_dir = {data:?}

[request_log]
body_sample_rate = 1.0

[request_log.keys.unsampled]
body_sample_rate = 0.0
"#,
        base = up.base_url(),
        data = cli.path().join("data"),
    );
    let mut config = Config::parse(&toml, "test config").unwrap();
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let token = app.shutdown_token();
    let server = tokio::spawn(app.run());
    let client = reqwest::Client::new();
    for (key, body) in requests {
        let mut req = client
            .post(format!("{base}/v1/chat/completions"))
            .json(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        resp.bytes().await.unwrap();
    }
    token.cancel();
    server.await.unwrap().unwrap();
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_logged_chat_traffic_as_openai_chat_jsonl() {
    let cli = TestCli::new();
    cli.ok(&["push"]);
    let created = cli.keys(&["create", "unsampled"]);
    let unsampled = created
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("key:  "))
        .unwrap_or_else(|| panic!("no key printed: {}", created.stderr))
        .to_owned();
    let up = OpenAiUpstream::start(Reply::Chat("Hello, Ada!".into())).await;
    up.push(Reply::Chat("Hi!".into()));
    up.push(Reply::Chat("Hello, Ada!".into()));
    up.push(Reply::stream_of(&["Bon", "jour"], true));
    let plain = json!({"model": "gpt-test", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    let prompted = json!({"model": "gpt-test",
        "prompt": {"name": "greeting", "label": "latest", "variables": {"name": "Ada"}}});
    let streamed = json!({"model": "gpt-test", "stream": true,
        "messages": [{"role": "user", "content": "Say hello in French"}]});
    let missing_model = json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]});
    serve_and_log(
        &cli,
        &up,
        &[
            (None, plain),
            (None, prompted),
            (None, streamed),
            (None, missing_model),
            (
                Some(&unsampled),
                json!({"model": "gpt-test", "messages": [{"role": "user", "content": "secret"}]}),
            ),
        ],
    )
    .await;

    let out = cli.path().join("dataset.jsonl");
    let run = cli.logs(&[
        "export",
        "--since",
        "24h",
        "--format",
        "openai-chat-jsonl",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim_end(),
        "exported 3 chat requests; skipped 1 without bodies, 1 failed or incomplete, 0 unreadable"
    );
    let examples = lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        examples[0],
        json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hi!"},
        ]})
    );
    // A registry prompt is exported as rendered, as the model saw it.
    assert_eq!(
        examples[1]["messages"],
        json!([
            {"role": "system", "content": "You are a friendly assistant. Answer in one short sentence."},
            {"role": "user", "content": "Say hello to Ada."},
            {"role": "assistant", "content": "Hello, Ada!"},
        ])
    );
    // A stream is exported with its assembled answer.
    assert_eq!(
        examples[2]["messages"][1],
        json!({"role": "assistant", "content": "Bonjour"})
    );

    // Filters; standard output without --output.
    let by_prompt = cli.logs(&["export", "--prompt", "greeting"]);
    assert_eq!(by_prompt.code, Some(0), "{}", by_prompt.stderr);
    assert_eq!(lines(&by_prompt.stdout), [examples[1].clone()]);
    let by_key = cli.logs(&["export", "--key", "unsampled", "--model", "gpt-test"]);
    assert_eq!(by_key.stdout, "");
    assert!(
        by_key
            .stderr
            .contains("exported 0 chat requests; skipped 1 without bodies"),
        "{}",
        by_key.stderr
    );
    let before = cli.logs(&["export", "--until", "2020-01-01"]);
    assert!(
        before.stderr.starts_with("exported 0 "),
        "{}",
        before.stderr
    );
    let bad = cli.logs(&["export", "--since", "yesterday"]);
    assert_eq!(bad.code, Some(2), "clap rejects it: {}", bad.stderr);
    assert!(bad.stderr.contains("not a time"), "{}", bad.stderr);

    let list = cli.logs(&["list", "--limit", "2"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let rows: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert!(
        rows[0].contains("unsampled") && rows[0].contains("200"),
        "{}",
        list.stdout
    );
    assert!(
        rows[1].contains("nope") && rows[1].contains("404"),
        "{}",
        list.stdout
    );
}
