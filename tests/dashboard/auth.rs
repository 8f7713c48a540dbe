//! The dashboard behind keys: only an admin key opens it, by header or by the login cookie.

use pasarela::limits::ApiKeyHash;

use crate::helpers::TestApp;
use crate::{FormFields, label_version, no_redirects, page, prompt_yaml, push, registry};

pub const ADMIN_KEY: &str = "sk-admin-test-0123456789";
const API_KEY: &str = "sk-plain-test-0123456789";

/// A gateway with one API key and one admin key, and `greeting` at versions 1 and 2.
pub async fn keyed_app() -> TestApp {
    let app = TestApp::spawn(&format!(
        "[auth]\napi_key_hashes = [\"{}\"]\nadmin_key_hashes = [\"{}\"]\n",
        ApiKeyHash::of(API_KEY),
        ApiKeyHash::of(ADMIN_KEY)
    ))
    .await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "one").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "two").await;
    app
}

async fn login(app: &TestApp, key: &str, next: &str) -> reqwest::Response {
    no_redirects()
        .post(app.url("/ui/login"))
        .form_fields(&[("key", key), ("next", next)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_a_key_pages_redirect_to_login_and_actions_are_refused() {
    let app = keyed_app().await;
    let client = no_redirects();
    let resp = client
        .get(app.url("/ui/prompts/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/ui/login?next=/ui/prompts/greeting"
    );
    let resp = client
        .post(app.url("/ui/prompts/greeting/labels"))
        .form_fields(&[("label", "staging"), ("version", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        label_version(&registry(&app).await, "greeting", "staging").await,
        None
    );
    // The login page and its assets need no key.
    let (status, html) = page(
        client
            .get(app.url("/ui/login?next=/ui"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"type="password" name="key""#), "{html}");
    assert_eq!(app.get("/ui/static/app.css").await.status(), 200);
}

#[tokio::test]
async fn a_plain_api_key_does_not_open_the_dashboard() {
    let app = keyed_app().await;
    let resp = no_redirects()
        .get(app.url("/ui"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "to the login page");
    let resp = login(&app, API_KEY, "/ui").await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.text().await.unwrap().contains("not an admin key"));
    let resp = no_redirects()
        .post(app.url("/ui/prompts/greeting/labels"))
        .bearer_auth(API_KEY)
        .form_fields(&[("label", "staging"), ("version", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_that_opens_pages_and_actions() {
    let app = keyed_app().await;
    let resp = login(&app, ADMIN_KEY, "/ui/prompts/greeting").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/prompts/greeting");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(ADMIN_KEY),
        "the key travels hex-encoded: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let client = no_redirects();
    let (status, html) = page(
        client
            .get(app.url("/ui"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"href="/ui/prompts/greeting""#), "{html}");
    assert!(html.contains("Log out"), "{html}");
    let resp = client
        .post(app.url("/ui/prompts/greeting/labels"))
        .header("cookie", &cookie)
        .form_fields(&[("label", "staging"), ("version", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let reg = registry(&app).await;
    assert_eq!(label_version(&reg, "greeting", "staging").await, Some(1));
    let (_, html) = page(
        client
            .get(app.url("/ui/prompts/greeting"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        html.contains("dashboard (admin key sha256:"),
        "the actor names the key's hash: {html}"
    );

    let resp = client
        .post(app.url("/ui/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    // A tampered cookie opens nothing.
    let resp = client
        .get(app.url("/ui"))
        .header("cookie", "pasarela_admin=00ff")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn an_admin_key_in_the_authorization_header_opens_the_dashboard() {
    let app = keyed_app().await;
    let resp = no_redirects()
        .get(app.url("/ui/prompts/greeting/diff?from=1&to=2"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn login_never_redirects_off_the_dashboard() {
    let app = keyed_app().await;
    let resp = login(&app, ADMIN_KEY, "//evil.example/ui").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui");
}

#[tokio::test]
async fn without_keys_the_login_page_sends_you_to_the_dashboard() {
    let app = TestApp::spawn("").await;
    let resp = no_redirects()
        .get(app.url("/ui/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui");
}
