//! The prompt registry through HTTP: the admin API under `/api/prompts`, and chat requests
//! that name a prompt (body field or header), checked at the stand-in upstream.

use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_error, one_route};
use crate::openai_upstream::{OpenAiUpstream, Reply};

fn greeting(system: &str) -> Value {
    json!({
        "name": "greeting",
        "model": "gpt-test",
        "params": {"temperature": 0.2, "max_tokens": 40},
        "variables": {"name": {"type": "string"}, "mood": {"type": "string", "default": "cheerful"}},
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Say hello to {{ name }} in a {{ mood }} way."}
        ]
    })
}

async fn push(app: &TestApp, prompt: Value) -> reqwest::Response {
    app.post(
        "/api/prompts",
        &json!({"prompt": prompt, "message": "test push", "author": "tester"}),
    )
    .await
}

async fn put_label(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client
        .put(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn upstream_app() -> (OpenAiUpstream, TestApp) {
    let up = OpenAiUpstream::start(Reply::Chat("Hello!".into())).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    (up, app)
}

#[tokio::test]
async fn pushing_creates_numbered_versions_and_unchanged_content_creates_nothing() {
    let (_up, app) = upstream_app().await;
    let first = push(&app, greeting("Be brief.")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        (first["version"].as_i64(), first["created"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(first["author"], "tester");

    let again = push(&app, greeting("Be brief.")).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (again["version"].as_i64(), again["created"].as_bool()),
        (Some(1), Some(false))
    );

    let second: Value = push(&app, greeting("Be very brief."))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["version"], 2);

    let detail: Value = app.get("/api/prompts/greeting").await.json().await.unwrap();
    assert_eq!(detail["latest_version"], 2);
    assert_eq!(detail["labels"]["latest"], 2);
    assert_eq!(detail["versions"].as_array().unwrap().len(), 2);
    let list: Value = app.get("/api/prompts").await.json().await.unwrap();
    assert_eq!(list["data"][0]["name"], "greeting");
}

#[tokio::test]
async fn a_bad_prompt_is_refused_naming_the_problem_and_nothing_is_stored() {
    let (_up, app) = upstream_app().await;
    let mut bad = greeting("x");
    bad["temprature"] = json!(0.5);
    let error = expect_error(push(&app, bad).await, 400).await;
    assert!(
        error["message"].as_str().unwrap().contains("temprature"),
        "{error}"
    );

    let mut undeclared = greeting("x");
    undeclared["messages"][1]["content"] = json!("Hello {{ nobody }}");
    let error = expect_error(push(&app, undeclared).await, 400).await;
    assert!(
        error["message"].as_str().unwrap().contains("nobody"),
        "{error}"
    );

    let list: Value = app.get("/api/prompts").await.json().await.unwrap();
    assert_eq!(list["data"], json!([]));
    expect_error(app.get("/api/prompts/greeting").await, 404).await;
}

#[tokio::test]
async fn protected_labels_move_only_with_force_and_roll_back_along_their_history() {
    let (_up, app) = upstream_app().await;
    push(&app, greeting("one")).await;
    push(&app, greeting("two")).await;
    push(&app, greeting("three")).await;

    let ok = put_label(
        &app,
        "/api/prompts/greeting/labels/staging",
        json!({"version": 2}),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let refused = put_label(
        &app,
        "/api/prompts/greeting/labels/production",
        json!({"version": 2}),
    )
    .await;
    let error = expect_error(refused, 409).await;
    assert_eq!(error["code"], "label_protected");
    for version in [2, 3] {
        let moved = put_label(
            &app,
            "/api/prompts/greeting/labels/production",
            json!({"version": version, "force": true, "actor": "alice"}),
        )
        .await;
        assert_eq!(moved.status(), 200);
    }
    let latest = put_label(
        &app,
        "/api/prompts/greeting/labels/latest",
        json!({"version": 1}),
    )
    .await;
    expect_error(latest, 400).await;
    let missing = put_label(
        &app,
        "/api/prompts/greeting/labels/staging",
        json!({"version": 9}),
    )
    .await;
    expect_error(missing, 404).await;

    let rollback = app
        .post(
            "/api/prompts/greeting/labels/production/rollback",
            &json!({"force": true}),
        )
        .await;
    assert_eq!(rollback.status(), 200);
    let rollback: Value = rollback.json().await.unwrap();
    assert_eq!(
        (rollback["from"].as_i64(), rollback["to"].as_i64()),
        (Some(3), Some(2))
    );

    let history: Value = app
        .get("/api/prompts/greeting/history")
        .await
        .json()
        .await
        .unwrap();
    let production: Vec<(Value, Value, Value)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["label"] == "production")
        .map(|m| (m["from"].clone(), m["to"].clone(), m["actor"].clone()))
        .collect();
    assert_eq!(
        production,
        [
            (Value::Null, json!(2), json!("alice")),
            (json!(2), json!(3), json!("alice")),
            (json!(3), json!(2), json!("api")),
        ]
    );
}

#[tokio::test]
async fn diff_and_version_show_what_changed_between_versions() {
    let (_up, app) = upstream_app().await;
    push(&app, greeting("Be brief.")).await;
    push(&app, greeting("Be very brief.")).await;
    let diff: Value = app
        .get("/api/prompts/greeting/diff?from=1&to=latest")
        .await
        .json()
        .await
        .unwrap();
    let changed: Vec<(&str, &str)> = diff["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["tag"] != "equal")
        .map(|l| (l["tag"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(
        changed[0].0 == "delete" && changed[0].1.contains("Be brief."),
        "{changed:?}"
    );
    assert!(
        changed[1].0 == "insert" && changed[1].1.contains("Be very brief."),
        "{changed:?}"
    );

    let v1: Value = app
        .get("/api/prompts/greeting/versions/1")
        .await
        .json()
        .await
        .unwrap();
    assert!(v1["yaml"].as_str().unwrap().contains("Be brief."), "{v1}");
    assert_eq!(v1["content"]["messages"][0]["content"], "Be brief.");
}

#[tokio::test]
async fn a_chat_request_naming_a_prompt_sends_its_rendered_messages_and_parameters_upstream() {
    let (up, app) = upstream_app().await;
    push(&app, greeting("Be brief.")).await;
    put_label(
        &app,
        "/api/prompts/greeting/labels/production",
        json!({"version": 1, "force": true}),
    )
    .await;
    push(&app, greeting("Be very brief.")).await;

    // No model, no messages: the prompt gives both; the request's own max_tokens wins.
    let resp = app
        .chat(json!({
            "prompt": {"name": "greeting", "variables": {"name": "Ada"}},
            "max_tokens": 7,
            "messages": [{"role": "user", "content": "And add a smiley."}]
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pasarela-prompt-name"], "greeting");
    assert_eq!(resp.headers()["x-pasarela-prompt-version"], "1");
    let (_, _, sent) = up.last();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello to Ada in a cheerful way."},
            {"role": "user", "content": "And add a smiley."}
        ])
    );
    assert_eq!(sent["max_tokens"], 7);
    assert_eq!(sent["temperature"], 0.2);
    assert!(
        sent.get("prompt").is_none(),
        "the reference must not reach the upstream: {sent}"
    );

    // A pinned version, through the header, for SDKs that cannot add body fields.
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("x-pasarela-prompt", "greeting#2")
        .header(
            "x-pasarela-prompt-variables",
            r#"{"name": "Grace", "mood": "calm"}"#,
        )
        .json(&json!({"model": "gpt-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pasarela-prompt-version"], "2");
    let (_, _, sent) = up.last();
    assert_eq!(sent["messages"][0]["content"], "Be very brief.");
    assert_eq!(
        sent["messages"][1]["content"],
        "Say hello to Grace in a calm way."
    );

    let detail: Value = app.get("/api/prompts/greeting").await.json().await.unwrap();
    let served: Vec<i64> = detail["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["served"].as_i64().unwrap())
        .collect();
    assert_eq!(served, [1, 1]);
}

#[tokio::test]
async fn a_prompt_that_cannot_render_is_a_400_naming_the_variable_and_nothing_goes_upstream() {
    let (up, app) = upstream_app().await;
    push(&app, greeting("Be brief.")).await;
    let missing = app
        .chat(json!({"prompt": {"name": "greeting", "label": "latest", "variables": {}}}))
        .await;
    let error = expect_error(missing, 400).await;
    assert_eq!(error["param"], "prompt.variables.name");
    let wrong_type = app
        .chat(json!({"prompt": {"name": "greeting", "label": "latest", "variables": {"name": 3}}}))
        .await;
    let error = expect_error(wrong_type, 400).await;
    assert!(
        error["message"].as_str().unwrap().contains("name"),
        "{error}"
    );
    let unknown = app
        .chat(json!({"prompt": "nosuch@latest", "model": "gpt-test"}))
        .await;
    let error = expect_error(unknown, 404).await;
    assert_eq!(error["code"], "prompt_not_found");
    // `greeting` alone means its production label, which nobody has set.
    let unlabelled = app
        .chat(json!({"prompt": "greeting", "variables": {"name": "x"}}))
        .await;
    expect_error(unlabelled, 404).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn with_keys_the_admin_api_needs_an_admin_key() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let api = pasarela::limits::ApiKeyHash::of("sk-user");
    let admin = pasarela::limits::ApiKeyHash::of("sk-admin");
    let extra = format!("[auth]\napi_key_hashes = [\"{api}\"]\nadmin_key_hashes = [\"{admin}\"]\n");
    let app = TestApp::spawn(&one_route(&up.base_url(), &extra)).await;
    let get = |key: Option<&'static str>| {
        let mut req = app.client.get(app.url("/api/prompts"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    expect_error(get(None).await.unwrap(), 401).await;
    expect_error(get(Some("sk-user")).await.unwrap(), 403).await;
    assert_eq!(get(Some("sk-admin")).await.unwrap().status(), 200);
    // The admin key opens /v1 too.
    let chat = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-admin")
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
}
