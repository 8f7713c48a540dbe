//! What the pages show: the prompt list, one prompt's versions and history, diffs, and the
//! error pages for what does not exist.

use crate::helpers::{TestApp, one_route};
use crate::openai_upstream::{OpenAiUpstream, Reply};
use crate::{FormFields, label_version, no_redirects, open_app, page, prompt_yaml, push, registry};
use pasarela::prompts::{Label, PromptName};

/// The text of the first `<td class="{class}">` cell.
fn cell<'a>(html: &'a str, class: &str) -> &'a str {
    let start = html
        .find(&format!("<td class=\"{class}\">"))
        .unwrap_or_else(|| panic!("no cell `{class}` in {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</td>").unwrap()]
}

#[tokio::test]
async fn empty_registry_tells_the_user_to_push_prompts() {
    let app = open_app().await;
    let (status, html) = page(app.get("/ui").await).await;
    assert_eq!(status, 200);
    assert!(html.contains("No prompts yet"), "{html}");
    assert!(html.contains("pasarela prompts push"), "{html}");
}

#[tokio::test]
async fn prompt_list_shows_each_prompt_with_its_labels_and_latest_version() {
    let app = open_app().await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "first").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "second").await;
    push(&reg, &prompt_yaml("summary", "Summarise"), "first").await;
    let name = PromptName::parse("greeting").unwrap();
    let staging = Label::parse("staging").unwrap();
    reg.move_label(&name, &staging, 1, "ana", false)
        .await
        .unwrap();

    let (status, html) = page(app.get("/ui").await).await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"href="/ui/prompts/greeting""#), "{html}");
    assert!(html.contains(r#"href="/ui/prompts/summary""#), "{html}");
    assert!(html.contains("staging <b>v1</b>"), "{html}");
    assert!(html.contains("latest <b>v2</b>"), "{html}");
    assert!(html.contains(" UTC</time>"), "last change time: {html}");
}

#[tokio::test]
async fn prompt_page_lists_versions_newest_first_with_labels_hashes_and_history() {
    let app = open_app().await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "first words").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "warmer").await;
    let name = PromptName::parse("greeting").unwrap();
    reg.move_label(&name, &Label::parse("staging").unwrap(), 1, "bo", false)
        .await
        .unwrap();
    let versions = reg.versions(&name).await.unwrap();

    let (status, html) = page(app.get("/ui/prompts/greeting").await).await;
    assert_eq!(status, 200);
    let (v2, v1) = (
        html.find(r#"id="v2""#).unwrap(),
        html.find(r#"id="v1""#).unwrap(),
    );
    assert!(v2 < v1, "newest first");
    assert!(
        html.contains("first words") && html.contains("warmer"),
        "{html}"
    );
    assert!(html.contains("<td>ana</td>"), "author: {html}");
    for v in &versions {
        let short = &v.meta.content_hash[..12];
        assert!(
            html.contains(&format!(">{short}</code>")),
            "hash {short}: {html}"
        );
    }
    assert!(html.contains("since this gateway started"), "{html}");
    assert!(
        html.contains("/ui/prompts/greeting/diff?from=1&amp;to=2"),
        "{html}"
    );
    // The history: bo's move of staging, and the pushes that moved latest.
    let history = &html[html.find(r#"id="history""#).unwrap()..];
    assert!(history.contains("<td>bo</td>"), "{history}");
    assert!(
        history.contains("<td>move</td>") && history.contains("<td>push</td>"),
        "{history}"
    );
    assert!(history.contains("v1 → v2"), "{history}");
    // The move form offers every version and the rollback needs a previous version.
    assert!(html.contains(r#"id="move-label""#), "{html}");
    assert!(
        html.contains(r#"<option value="1">v1 (staging)</option>"#),
        "{html}"
    );
}

#[tokio::test]
async fn prompt_content_is_shown_as_text_never_as_markup() {
    let app = open_app().await;
    let reg = registry(&app).await;
    push(
        &reg,
        &prompt_yaml("xss", "hi"),
        "<img src=x onerror=alert(2)>",
    )
    .await;
    push(
        &reg,
        &prompt_yaml("xss", "<script>alert(1)</script>"),
        "<b>bold</b>",
    )
    .await;

    for path in ["/ui", "/ui/prompts/xss", "/ui/prompts/xss/diff?from=1&to=2"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let html = resp.text().await.unwrap();
        assert!(!html.contains("<script>alert"), "{path}: {html}");
        assert!(!html.contains("<img src=x"), "{path}: {html}");
        assert!(!html.contains("<b>bold</b>"), "{path}: {html}");
    }
    let (_, html) = page(app.get("/ui/prompts/xss").await).await;
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    let (_, diff) = page(app.get("/ui/prompts/xss/diff?from=1&to=2").await).await;
    assert!(cell(&diff, "code ins").contains("&lt;script&gt;"), "{diff}");
}

#[tokio::test]
async fn diff_shows_deleted_lines_left_and_inserted_lines_right() {
    let app = open_app().await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "one").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "two").await;

    let (status, html) = page(app.get("/ui/prompts/greeting/diff?from=1&to=2").await).await;
    assert_eq!(status, 200, "{html}");
    assert!(cell(&html, "code del").contains("Say hi"), "{html}");
    assert!(cell(&html, "code ins").contains("Say hello"), "{html}");
    assert!(
        html.contains("+1</span>") && html.contains("−1</span>"),
        "{html}"
    );
    // Unchanged lines sit on both sides, each with its number.
    assert!(html.contains(r#"<tr class="equal">"#), "{html}");

    let (status, same) = page(app.get("/ui/prompts/greeting/diff?from=2&to=2").await).await;
    assert_eq!(status, 200);
    assert!(same.contains("identical"), "{same}");
}

#[tokio::test]
async fn diff_of_bad_or_unknown_versions_is_a_clear_error_page() {
    let app = open_app().await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "one").await;

    let (status, html) = page(app.get("/ui/prompts/greeting/diff?from=1&to=9").await).await;
    assert_eq!(status, 404);
    assert!(html.contains("has no version 9"), "{html}");
    let (status, html) = page(app.get("/ui/prompts/greeting/diff?from=x&to=1").await).await;
    assert_eq!(status, 400);
    assert!(html.contains("invalid version"), "{html}");
    let (status, html) = page(app.get("/ui/prompts/greeting/diff").await).await;
    assert_eq!(status, 400);
    assert!(html.contains("Choose two versions"), "{html}");
}

#[tokio::test]
async fn unknown_or_malformed_prompt_names_are_404_pages() {
    let app = open_app().await;
    let (status, html) = page(app.get("/ui/prompts/nope").await).await;
    assert_eq!(status, 404);
    assert!(
        html.contains("<h1>Not found</h1>") && html.contains("nope"),
        "{html}"
    );
    let (status, html) = page(app.get("/ui/prompts/Bad%20Name").await).await;
    assert_eq!(status, 404);
    assert!(html.contains("invalid prompt name"), "{html}");
    let resp = no_redirects()
        .post(app.url("/ui/prompts/nope/labels"))
        .form_fields(&[("label", "staging"), ("version", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("exists", "x"), "one").await;
    assert_eq!(label_version(&reg, "exists", "staging").await, None);
}

#[tokio::test]
async fn static_files_are_served_from_the_binary() {
    let app = open_app().await;
    let resp = app.get("/ui/static/app.css").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let resp = app.get("/ui/static/app.js").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("confirm"));
    assert_eq!(app.get("/ui/static/nope.js").await.status(), 404);
}

#[tokio::test]
async fn requests_served_per_version_are_counted_since_the_gateway_started() {
    let up = OpenAiUpstream::start(Reply::Chat("Hello!".into())).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "one").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "two").await;
    for reference in ["greeting#1", "greeting#1", "greeting#2"] {
        let resp = app
            .client
            .post(app.url("/v1/chat/completions"))
            .header("x-pasarela-prompt", reference)
            .json(&serde_json::json!({"model": "gpt-test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{reference}");
    }

    let (_, html) = page(app.get("/ui/prompts/greeting").await).await;
    let served = |version: &str| {
        let row = &html[html.find(&format!(r#"<tr id="{version}">"#)).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        cell(row, "num")
            .trim_start_matches(r#"<td class="num">"#)
            .to_owned()
    };
    assert_eq!(served("v1"), "2", "{html}");
    assert_eq!(served("v2"), "1", "{html}");
}

#[tokio::test]
async fn prompt_page_shows_the_eval_runs_that_tested_each_version() {
    use pasarela::store::{EvalTargetRow, NewEvalRun};

    let app = open_app().await;
    let reg = registry(&app).await;
    push(&reg, &prompt_yaml("greeting", "Say hi"), "first").await;
    push(&reg, &prompt_yaml("greeting", "Say hello"), "second").await;
    let (status, html) = page(app.get("/ui/prompts/greeting").await).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("No eval run has tested this prompt yet"),
        "{html}"
    );

    let runs = reg.store().eval_runs();
    let store_run = |version: i64, passed: i64| {
        let runs = runs.clone();
        async move {
            runs.insert(&NewEvalRun {
                suite: "greeting-suite",
                started_at: chrono::Utc::now(),
                duration_ms: 10,
                endpoint: "in-process",
                passed: passed == 4,
                report: "{}",
                targets: vec![EvalTargetRow {
                    label: "prod".into(),
                    model: "m".into(),
                    prompt: Some(("greeting".into(), version)),
                    attempts: 4,
                    passed_attempts: passed,
                    met_threshold: passed == 4,
                }],
            })
            .await
            .unwrap()
        }
    };
    let first = store_run(1, 4).await;
    let second = store_run(2, 3).await;
    runs.bless(first, "ana").await.unwrap();

    let (status, html) = page(app.get("/ui/prompts/greeting").await).await;
    assert_eq!(status, 200);
    let evals = &html[html.find("id=\"evals\"").expect("an eval runs table")..];
    // Newest first, with each run's pass rate and verdict; the blessed run is the baseline.
    let (row2, row1) = (
        evals.find(&format!("id=\"run-{second}\"")).unwrap(),
        evals.find(&format!("id=\"run-{first}\"")).unwrap(),
    );
    assert!(row2 < row1, "{evals}");
    assert!(
        evals[row2..row1].contains("75.0%") && evals[row2..row1].contains("not met"),
        "{evals}"
    );
    assert!(
        evals[row1..].contains("100.0%") && evals[row1..].contains("baseline"),
        "{evals}"
    );
    // Each version's row carries its suite's newest verdict.
    let v2 = &html[html.find("<tr id=\"v2\">").unwrap()..];
    let v2 = &v2[..v2.find("</tr>").unwrap()];
    assert!(
        v2.contains("badge-fail") && v2.contains("greeting-suite ✗"),
        "{v2}"
    );
    let v1 = &html[html.find("<tr id=\"v1\">").unwrap()..];
    let v1 = &v1[..v1.find("</tr>").unwrap()];
    assert!(
        v1.contains("badge-pass") && v1.contains("greeting-suite ✓"),
        "{v1}"
    );
}
