//! Black-box tests of the dashboard at `/ui`: the real server on port 0, prompts pushed into
//! its store through a second `Registry` on the same SQLite file (WAL lets both in), and the
//! pages checked as HTML. `browser.rs` drives the same pages in headless Chromium.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

#[path = "../gateway/helpers.rs"]
#[expect(
    dead_code,
    reason = "shared with tests/gateway; the dashboard uses only part of it"
)]
mod helpers;
#[path = "../gateway/openai_upstream.rs"]
#[expect(
    dead_code,
    reason = "shared with tests/gateway; the dashboard needs only chat replies"
)]
mod openai_upstream;

mod actions;
mod auth;
mod browser;
mod pages;

use std::path::Path;

use pasarela::config::{PromptsConfig, StoreConfig};
use pasarela::prompts::{PromptFile, Registry};
use pasarela::store::{PushOutcome, Store};

use helpers::TestApp;

/// A gateway with no keys: the dashboard is open, as on a developer's machine.
pub async fn open_app() -> TestApp {
    TestApp::spawn("").await
}

/// A registry on `app`'s own data dir, as `pasarela prompts push` would open it.
pub async fn registry(app: &TestApp) -> Registry {
    let config = StoreConfig {
        data_dir: app.data_dir.path().to_owned(),
        database_url: None,
    };
    let store = Store::open(&config).await.unwrap();
    Registry::new(store, &PromptsConfig::default())
        .await
        .unwrap()
}

/// A prompt file's text with one user message.
pub fn prompt_yaml(name: &str, user: &str) -> String {
    format!(
        "name: {name}\nparams:\n  temperature: 0.2\nmessages:\n  - role: user\n    content: {user:?}\n"
    )
}

/// Pushes `yaml` as a new version by `ana` and returns its number.
pub async fn push(registry: &Registry, yaml: &str, message: &str) -> i64 {
    let file = PromptFile::parse(Path::new("prompt.yaml"), yaml).unwrap();
    match registry.push(&file, "ana", Some(message)).await.unwrap() {
        PushOutcome::Created(meta) => meta.version,
        PushOutcome::Unchanged(meta) => panic!("expected a new version, got {meta:?}"),
    }
}

/// The version `label` of `name` points at now, read from the store.
pub async fn label_version(registry: &Registry, name: &str, label: &str) -> Option<i64> {
    let name = pasarela::prompts::PromptName::parse(name).unwrap();
    registry
        .versions(&name)
        .await
        .unwrap()
        .iter()
        .find(|v| v.labels.iter().any(|l| l == label))
        .map(|v| v.meta.version)
}

/// A client that does not follow redirects, so tests see the 303s.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn page(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Form posts as a browser sends them (`reqwest` is built here without its `form` feature).
pub trait FormFields {
    fn form_fields(self, fields: &[(&str, &str)]) -> Self;
}

impl FormFields for reqwest::RequestBuilder {
    fn form_fields(self, fields: &[(&str, &str)]) -> Self {
        let encode = |text: &str| -> String {
            text.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                        char::from(b).to_string()
                    }
                    b' ' => "+".to_owned(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}
