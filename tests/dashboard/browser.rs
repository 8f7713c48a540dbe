//! The dashboard in a real browser: Debian's headless Chromium, driven by `playwright-core`
//! (`browser/dashboard.mjs`), logs in with the admin key, moves a label through the form and
//! its confirmation dialog, and takes a screenshot. `scripts/setup-browser` installs what it
//! needs; without it the test says SKIPPED, unless `PASARELA_REQUIRE_ALL` makes that a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pasarela::prompts::{Label, PromptName};

use crate::auth::{ADMIN_KEY, keyed_app};
use crate::{label_version, registry};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Chromium's start and a few page loads take seconds; a hung browser must not hang the suite.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// A screenshot of a whole dashboard page is tens of kilobytes; a blank or broken one is far
/// smaller.
const MIN_SCREENSHOT_BYTES: usize = 10_000;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/browser")
}

/// Why the browser test cannot run on this machine, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("`node` is not on PATH".into());
    }
    if !browser_dir().join("node_modules/playwright-core").is_dir() {
        return Some(
            "tests/dashboard/browser/node_modules/playwright-core is missing (run scripts/setup-browser)"
                .into(),
        );
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (run scripts/setup-browser)"));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_a_label_in_a_real_browser_changes_the_registry() {
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
            "the browser test cannot run and PASARELA_REQUIRE_ALL is set: {why}"
        );
        eprintln!("SKIPPED moving_a_label_in_a_real_browser_changes_the_registry: {why}");
        return;
    }
    // Keys on, so the browser goes through the login form and its cookie too.
    let app = keyed_app().await;
    let reg = registry(&app).await;
    let name = PromptName::parse("greeting").unwrap();
    reg.move_label(&name, &Label::parse("staging").unwrap(), 2, "ana", false)
        .await
        .unwrap();

    // Under target/, so that a person can look at it after the run.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser.png");
    let _ = std::fs::remove_file(&screenshot);
    let run = tokio::process::Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .arg(&app.base)
        .arg(&screenshot)
        .arg("greeting")
        .env("PASARELA_ADMIN_KEY", ADMIN_KEY)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .expect("the browser script finishes in time")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains(r#""ok":true"#), "{stdout}");

    // Checked through the admin API, as an operator's script would see the change.
    let detail: serde_json::Value = app
        .client
        .get(app.url("/api/prompts/greeting"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["labels"]["staging"], 1, "{detail}");
    assert_eq!(label_version(&reg, "greeting", "staging").await, Some(1));
    let history = reg.history(&name).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.label.as_str(), last.from, last.to),
        ("staging", Some(2), 1)
    );
    assert!(
        last.actor.starts_with("dashboard (admin key sha256:"),
        "{}",
        last.actor
    );

    let png = std::fs::read(&screenshot).expect("the script saved a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > MIN_SCREENSHOT_BYTES,
        "screenshot of {} bytes is too small to show the page",
        png.len()
    );
}
