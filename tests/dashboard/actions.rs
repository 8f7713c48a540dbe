//! The label actions through their forms: moves, rollbacks, and the refusals the page shows.

use pasarela::prompts::Registry;
use pasarela::prompts::{Label, PromptName};

use crate::helpers::TestApp;
use crate::{FormFields, label_version, no_redirects, open_app, page, prompt_yaml, push, registry};

/// An app with `greeting` at versions 1 and 2.
async fn app_with_two_versions() -> (TestApp, Registry) {
    let app = open_app().await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "one").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "two").await;
    (app, reg)
}

async fn post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    no_redirects()
        .post(app.url(path))
        .form_fields(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn moving_a_label_redirects_back_with_a_notice() {
    let (app, reg) = app_with_two_versions().await;
    let resp = post(
        &app,
        "/ui/prompts/greeting/labels",
        &[("label", "staging"), ("version", "1")],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        "/ui/prompts/greeting?done=moved&label=staging&version=1"
    );
    assert_eq!(label_version(&reg, "greeting", "staging").await, Some(1));

    let (status, html) = page(app.get(&location).await).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Label `staging` now points at version 1."),
        "{html}"
    );
    let history = &html[html.find(r#"id="history""#).unwrap()..];
    assert!(history.contains("<td>dashboard</td>"), "{history}");

    // The same move again changes nothing and says so.
    let resp = post(
        &app,
        "/ui/prompts/greeting/labels",
        &[("label", "staging"), ("version", "1")],
    )
    .await;
    assert_eq!(
        resp.headers()["location"],
        "/ui/prompts/greeting?done=unchanged&label=staging&version=1"
    );
}

#[tokio::test]
async fn a_protected_label_moves_only_when_force_is_ticked() {
    let (app, reg) = app_with_two_versions().await;
    let resp = post(
        &app,
        "/ui/prompts/greeting/labels",
        &[("label", "production"), ("version", "1")],
    )
    .await;
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert!(html.contains("is protected"), "{html}");
    assert!(
        html.contains(r#"id="versions""#),
        "the prompt page, with the error: {html}"
    );
    assert_eq!(label_version(&reg, "greeting", "production").await, None);

    let resp = post(
        &app,
        "/ui/prompts/greeting/labels",
        &[("label", "production"), ("version", "1"), ("force", "on")],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(label_version(&reg, "greeting", "production").await, Some(1));
    // Its rollback form then carries a required force box.
    reg.move_label(
        &PromptName::parse("greeting").unwrap(),
        &Label::parse("production").unwrap(),
        2,
        "ana",
        true,
    )
    .await
    .unwrap();
    let (_, html) = page(app.get("/ui/prompts/greeting").await).await;
    assert!(
        html.contains(r#"<input type="checkbox" name="force" required>"#),
        "{html}"
    );
    let resp = post(&app, "/ui/prompts/greeting/labels/production/rollback", &[]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(label_version(&reg, "greeting", "production").await, Some(2));
    let resp = post(
        &app,
        "/ui/prompts/greeting/labels/production/rollback",
        &[("force", "on")],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(label_version(&reg, "greeting", "production").await, Some(1));
}

#[tokio::test]
async fn rollback_returns_a_label_to_where_it_pointed_before() {
    let (app, reg) = app_with_two_versions().await;
    let name = PromptName::parse("greeting").unwrap();
    let staging = Label::parse("staging").unwrap();
    reg.move_label(&name, &staging, 1, "ana", false)
        .await
        .unwrap();
    reg.move_label(&name, &staging, 2, "ana", false)
        .await
        .unwrap();

    let (_, html) = page(app.get("/ui/prompts/greeting").await).await;
    assert!(
        html.contains("/ui/prompts/greeting/labels/staging/rollback"),
        "{html}"
    );
    assert!(html.contains("Roll back to v1"), "{html}");

    let resp = post(&app, "/ui/prompts/greeting/labels/staging/rollback", &[]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/ui/prompts/greeting?done=rolled-back&label=staging&version=1"
    );
    assert_eq!(label_version(&reg, "greeting", "staging").await, Some(1));

    // A label that was never set has nothing to roll back to.
    let resp = post(&app, "/ui/prompts/greeting/labels/canary/rollback", &[]).await;
    assert_eq!(resp.status(), 404);
    let html = resp.text().await.unwrap();
    assert!(html.contains("never been set"), "{html}");
}

#[tokio::test]
async fn bad_labels_and_unknown_versions_show_the_error_on_the_page() {
    let (app, reg) = app_with_two_versions().await;
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Fields, u16, &str); 5] = [
        (
            &[("label", "staging"), ("version", "9")],
            404,
            "has no version 9",
        ),
        (
            &[("label", "Not A Label"), ("version", "1")],
            400,
            "invalid label",
        ),
        (
            &[("label", "staging"), ("version", "one")],
            400,
            "invalid version",
        ),
        (
            &[("label", "latest"), ("version", "1")],
            400,
            "cannot be moved",
        ),
        (&[("version", "1")], 400, "invalid label"),
    ];
    for (form, status, text) in cases {
        let resp = post(&app, "/ui/prompts/greeting/labels", form).await;
        assert_eq!(resp.status().as_u16(), status, "{form:?}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(text), "{form:?}: {html}");
        assert!(html.contains(r#"class="notice error""#), "{html}");
    }
    assert_eq!(label_version(&reg, "greeting", "staging").await, None);
    assert_eq!(label_version(&reg, "greeting", "latest").await, Some(2));
}

#[tokio::test]
async fn cross_site_form_posts_are_refused() {
    let (app, reg) = app_with_two_versions().await;
    let resp = no_redirects()
        .post(app.url("/ui/prompts/greeting/labels"))
        .header("origin", "http://evil.example")
        .form_fields(&[("label", "staging"), ("version", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(label_version(&reg, "greeting", "staging").await, None);
}
