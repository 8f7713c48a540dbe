//! `TestApp`: the real application on an ephemeral port, with typed request helpers.

use std::time::Duration;

use pasarela::config::Config;
use pasarela::server::Application;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The app's data dir (its SQLite store), removed when the app is dropped.
    #[allow(
        dead_code,
        reason = "shared by several test binaries; only some open the store themselves"
    )]
    pub data_dir: tempfile::TempDir,
    token: CancellationToken,
    join: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts the gateway with `toml` as its configuration, on 127.0.0.1 and a free port.
    pub async fn spawn(toml: &str) -> TestApp {
        let mut config = Config::parse(toml, "test config").expect("test config is valid");
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        let data_dir = tempfile::tempdir().expect("a temporary data dir");
        if config.store.database_url.is_none() {
            config.store.data_dir = data_dir.path().to_owned();
        }
        let app = Application::build(config)
            .await
            .expect("application builds");
        let base = format!("http://{}", app.local_addr());
        let token = app.shutdown_token();
        let join = tokio::spawn(app.run());
        TestApp {
            base,
            client: reqwest::Client::new(),
            data_dir,
            token,
            join: Some(join),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches the gateway")
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", &body).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the gateway")
    }

    /// Begins a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.token.cancel();
    }

    /// Shuts down and waits for the server task to finish.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(join) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(10), join)
                .await
                .expect("server stops within 10 s")
                .expect("server task did not panic")
                .expect("server ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A config with one OpenAI-compatible provider `up` at `base_url` and one route `model`
/// served by it as `upstream-model`, plus whatever `extra` TOML adds.
pub fn one_route(base_url: &str, extra: &str) -> String {
    format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{base_url}"

[routes.gpt-test]
deployments = [{{ provider = "up", model = "upstream-model" }}]
retry = {{ max_retries = 2, initial_backoff_ms = 1, max_backoff_ms = 5 }}

{extra}
"#
    )
}

pub fn user_message(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| {
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// Asserts an OpenAI error envelope with this status, and returns its `error` object.
pub async fn expect_error(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let body: Value = resp.json().await.expect("error body is JSON");
    let error = body
        .get("error")
        .cloned()
        .unwrap_or_else(|| panic!("no `error` in {body}"));
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "`param` key present: {body}");
    assert!(error.get("code").is_some(), "`code` key present: {body}");
    error
}

/// The admin key of [`admin_config`].
pub const ADMIN: &str = "sk-admin-0123456789abcdef";

/// `[auth]` with [`ADMIN`] as the admin key, then `extra`.
pub fn admin_config(extra: &str) -> String {
    let admin = pasarela::limits::ApiKeyHash::of(ADMIN);
    format!("[auth]\nadmin_key_hashes = [\"{admin}\"]\n{extra}")
}

/// Makes a virtual key through the admin API (`POST /api/keys` with `body`); returns the key.
pub async fn create_key(app: &TestApp, body: Value) -> String {
    let resp = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// A chat completion request made with `key`.
pub async fn chat_as(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `GET path` with `key`, its JSON body.
pub async fn get_json_as(app: &TestApp, key: &str, path: &str) -> Value {
    app.client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
