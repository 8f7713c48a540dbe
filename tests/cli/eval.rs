//! `pasarela eval run` against a stand-in OpenAI-compatible API (`--against`): exit codes,
//! reports, the response cache, repeats, and the pace a 429 imposes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::command::{Run, TestCli};

/// An OpenAI-compatible API whose answer depends on the request: the last user message,
/// upper-cased, with `finish_reason` `stop`. A message containing `server-error` gets a 500;
/// the first `throttle` calls get a 429 with `Retry-After: 0`; a message containing `flip`
/// alternates between its upper-cased text and `nope`.
#[derive(Clone, Default)]
struct Api {
    calls: Arc<AtomicUsize>,
    throttle: Arc<AtomicUsize>,
    throttled: Arc<AtomicUsize>,
    flips: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

async fn chat(State(api): State<Api>, Json(body): Json<Value>) -> Response {
    if api
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        api.throttled.fetch_add(1, Ordering::SeqCst);
        let error = json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            Json(error),
        )
            .into_response();
    }
    api.calls.fetch_add(1, Ordering::SeqCst);
    let now = api.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    api.most_in_flight.fetch_max(now, Ordering::SeqCst);
    // Let concurrent calls overlap, so the most in flight is observable.
    tokio::task::yield_now().await;
    api.in_flight.fetch_sub(1, Ordering::SeqCst);
    let text = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    if text.contains("server-error") {
        let error = json!({"error": {"message": "upstream exploded", "type": "server_error", "param": null, "code": null}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response();
    }
    let answer = if text.contains("flip") && api.flips.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
        "nope".to_owned()
    } else {
        text.to_uppercase()
    };
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    }))
    .into_response()
}

/// Embeddings whose direction is the text's length: texts of equal length are identical
/// (cosine 1), a text three times as long as another is far from it.
async fn embeddings(State(api): State<Api>, Json(body): Json<Value>) -> Json<Value> {
    api.calls.fetch_add(1, Ordering::SeqCst);
    let data: Vec<Value> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let n = text.as_str().unwrap().len() as f64;
            json!({"object": "embedding", "index": i, "embedding": [1.0, n / 10.0]})
        })
        .collect();
    Json(
        json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    )
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]}),
    )
}

async fn start(api: Api) -> SocketAddr {
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

const SUITE: &str = "\
targets:
  - label: shouty
    model: m
    prompt:
      messages:
        - { role: user, content: \"say {{ word }}\" }
dataset:
  - id: hello
    vars: { word: hello }
    assert:
      - { type: equals, value: SAY HELLO }
  - id: world
    vars: { word: world }
    assert:
      - { type: contains, value: WORLD }
      - { type: not-contains, value: hello }
default_assertions:
  - { type: finish-reason, value: stop }
  - { type: max-tokens, value: 3 }
";

/// `pasarela eval run` with `args`, off the test's runtime (the stand-in runs on it).
async fn eval(cli: &Arc<TestCli>, args: Vec<String>) -> Run {
    let cli = cli.clone();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.eval(&args)
    })
    .await
    .unwrap()
}

fn write(cli: &TestCli, name: &str, text: &str) -> String {
    let path = cli.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn args(suite: &str, addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run".to_owned(),
        suite.to_owned(),
        "--against".to_owned(),
        format!("http://{addr}/v1"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_suite_exits_0_and_writes_every_report() {
    let api = Api::default();
    let addr = start(api.clone()).await;
    let cli = Arc::new(TestCli::new());
    let suite = write(&cli, "shouty.yaml", SUITE);
    let dir = cli.path().to_owned();
    let (json_file, junit, md, html) = (
        dir.join("out/r.json"),
        dir.join("out/r.xml"),
        dir.join("out/r.md"),
        dir.join("out/r.html"),
    );
    let run = eval(
        &cli,
        args(
            &suite,
            addr,
            &[
                "--output",
                "json",
                json_file.to_str().unwrap(),
                "--output",
                "junit",
                junit.to_str().unwrap(),
                "--output",
                "markdown",
                md.to_str().unwrap(),
                "--output",
                "html",
                html.to_str().unwrap(),
            ],
        ),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("suite shouty") && run.stdout.contains("pass rate 100.0%"),
        "{}",
        run.stdout
    );
    assert_eq!(api.calls.load(Ordering::SeqCst), 2);

    let report = read_json(&json_file);
    assert_eq!(report["passed"], true);
    assert_eq!(report["targets"][0]["label"], "shouty");
    assert_eq!(report["targets"][0]["pass_rate"], 1.0);
    assert_eq!(report["targets"][0]["completion_tokens"], 6);
    let hello = &report["results"][0];
    assert_eq!(hello["case_id"], "hello");
    assert_eq!(hello["output"], "SAY HELLO");
    assert_eq!(hello["verdicts"].as_array().unwrap().len(), 3);

    let junit =
        quick_junit::Report::deserialize_from_str(&std::fs::read_to_string(&junit).unwrap())
            .expect("the JUnit report parses");
    assert_eq!(junit.tests, 2);
    assert_eq!(junit.failures, 0);
    assert_eq!(junit.test_suites[0].test_cases[1].name.as_str(), "world");

    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("## Eval `shouty`: passed") && md.contains("| shouty | m |"),
        "{md}"
    );
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(
        html.starts_with("<!doctype html>") && html.contains("SAY HELLO"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_below_its_threshold_exits_100_and_names_the_failing_case() {
    let addr = start(Api::default()).await;
    let cli = Arc::new(TestCli::new());
    let failing = SUITE.replace("value: SAY HELLO", "value: say hello");
    let suite = write(&cli, "shouty.yaml", &failing);
    let md = cli.path().join("r.md");
    let run = eval(
        &cli,
        args(
            &suite,
            addr,
            &["--output", "markdown", md.to_str().unwrap()],
        ),
    )
    .await;
    assert_eq!(run.code, Some(100), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAIL shouty / hello"), "{}", run.stdout);
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("failed") && md.contains("`hello`: equals: output differs"),
        "{md}"
    );

    // A threshold the one passing case meets: exit 0.
    let lenient = write(&cli, "lenient.yaml", &format!("{failing}threshold: 0.5\n"));
    let run = eval(&cli, args(&lenient, addr, &[])).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_suite_or_an_unreachable_target_exits_1() {
    let addr = start(Api::default()).await;
    let cli = Arc::new(TestCli::new());
    let bad = write(
        &cli,
        "bad.yaml",
        &SUITE.replace("type: contains,", "type: contians,"),
    );
    let run = eval(&cli, args(&bad, addr, &[])).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("bad.yaml:15") && run.stderr.contains("contians"),
        "{}",
        run.stderr
    );

    let good = write(&cli, "good.yaml", SUITE);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = eval(&cli, args(&good, closed, &[])).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_by_request_but_errors_are_not() {
    let api = Api::default();
    let addr = start(api.clone()).await;
    let cli = Arc::new(TestCli::new());
    let with_error = format!(
        "{SUITE}  - id: broken\n    vars: {{ word: server-error }}\n    assert: [{{ type: is-json }}]\n"
    )
    .replace("default_assertions:\n  - { type: finish-reason, value: stop }\n  - { type: max-tokens, value: 3 }\n", "");
    let suite = write(&cli, "cached.yaml", &with_error);
    let json_file = cli.path().join("r.json");
    let out = ["--output", "json", json_file.to_str().unwrap()];
    let run = eval(&cli, args(&suite, addr, &out)).await;
    assert_eq!(run.code, Some(100), "{}\n{}", run.stdout, run.stderr);
    let first = read_json(&json_file);
    assert!(
        first["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("upstream exploded")
    );
    assert_eq!(first["targets"][0]["errors"], 1);
    let calls = api.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 3);

    // Again: the two answers come from the cache, the error is asked again.
    let run = eval(&cli, args(&suite, addr, &out)).await;
    assert_eq!(run.code, Some(100), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(api.calls.load(Ordering::SeqCst), calls + 1);
    let second = read_json(&json_file);
    assert_eq!(second["results"][0]["cached"], true);
    assert_eq!(second["results"][0]["output"], "SAY HELLO");
    assert_eq!(second["results"][2]["cached"], false);

    // --no-cache asks for everything.
    let mut no_cache = out.to_vec();
    no_cache.push("--no-cache");
    eval(&cli, args(&suite, addr, &no_cache)).await;
    assert_eq!(api.calls.load(Ordering::SeqCst), calls + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_independent_calls_summed_up_as_pass_at_k_and_pass_all_k() {
    let api = Api::default();
    let addr = start(api.clone()).await;
    let cli = Arc::new(TestCli::new());
    let suite = write(
        &cli,
        "repeat.yaml",
        "targets:\n  - model: m\ndataset:\n  - id: flaky\n    vars: { input: flip }\n    assert: [{ type: equals, value: FLIP }]\n  - id: steady\n    vars: { input: calm }\n    assert: [{ type: equals, value: CALM }]\nrepeat: 4\nthreshold: 0.7\n",
    );
    let json_file = cli.path().join("r.json");
    let out = [
        "--output",
        "json",
        json_file.to_str().unwrap(),
        "--concurrency",
        "1",
    ];
    let run = eval(&cli, args(&suite, addr, &out)).await;
    // 6 of 8 attempts pass: 75 % ≥ 70 %.
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = read_json(&json_file);
    let target = &report["targets"][0];
    assert_eq!(target["pass_rate"], 0.75);
    // flaky passed 2 of 4 (pass@4 = 1, pass^4 = 0), steady 4 of 4 (both 1).
    assert_eq!(target["pass_at_k"], 1.0);
    assert_eq!(target["pass_all_k"], 0.5);
    // A second run repeats every call: repeats never come from the cache.
    eval(&cli, args(&suite, addr, &out)).await;
    assert_eq!(api.calls.load(Ordering::SeqCst), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_slows_the_run_down_and_every_case_still_runs() {
    let api = Api::default();
    api.throttle.store(5, Ordering::SeqCst);
    let addr = start(api.clone()).await;
    let cli = Arc::new(TestCli::new());
    let mut cases = String::new();
    for i in 0..40 {
        cases.push_str(&format!("  - {{ id: c{i}, vars: {{ input: w{i} }}, assert: [{{ type: equals, value: W{i} }}] }}\n"));
    }
    let suite = write(
        &cli,
        "load.yaml",
        &format!("targets:\n  - model: m\ndataset:\n{cases}"),
    );
    let json_file = cli.path().join("r.json");
    let out = [
        "--concurrency",
        "16",
        "--no-cache",
        "--output",
        "json",
        json_file.to_str().unwrap(),
    ];
    let run = eval(&cli, args(&suite, addr, &out)).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report = read_json(&json_file);
    assert_eq!(report["concurrency"], 16);
    assert!(
        report["lowest_concurrency"].as_u64().unwrap() < 16,
        "{}",
        report["lowest_concurrency"]
    );
    assert_eq!(api.throttled.load(Ordering::SeqCst), 5);
    assert_eq!(api.calls.load(Ordering::SeqCst), 40);
    assert!(api.most_in_flight.load(Ordering::SeqCst) <= 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_that_passed_in_the_blessed_run_and_fails_now_is_a_regression() {
    let addr = start(Api::default()).await;
    let cli = Arc::new(TestCli::new());
    let suite = write(&cli, "shouty.yaml", SUITE);
    let run = eval(&cli, args(&suite, addr, &["--baseline", "blessed"])).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("stored as run 1"), "{}", run.stdout);
    assert!(run.stderr.contains("no blessed baseline"), "{}", run.stderr);
    let bless = eval(&cli, vec!["bless".into(), "1".into()]).await;
    assert_eq!(bless.code, Some(0), "{}", bless.stderr);
    assert!(
        bless
            .stdout
            .contains("run 1 is now the baseline of suite shouty"),
        "{}",
        bless.stdout
    );

    // The same answers, judged by a stricter suite: `hello` no longer passes.
    write(
        &cli,
        "shouty.yaml",
        &SUITE.replace("value: SAY HELLO", "value: SAY HELLO!"),
    );
    let md = cli.path().join("r.md");
    let gate = [
        "--baseline",
        "blessed",
        "--fail-on-regression",
        "--output",
        "markdown",
        md.to_str().unwrap(),
    ];
    let run = eval(&cli, args(&suite, addr, &gate)).await;
    assert_eq!(run.code, Some(100), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("against run 1: 1 regressions, 0 fixed, 1 unchanged"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("REGRESSED shouty / hello"),
        "{}",
        run.stdout
    );
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("regressed: **shouty** · `hello`"), "{md}");

    let compare = eval(
        &cli,
        vec![
            "compare".into(),
            "1".into(),
            "2".into(),
            "--fail-on-regression".into(),
        ],
    )
    .await;
    assert_eq!(
        compare.code,
        Some(100),
        "{}\n{}",
        compare.stdout,
        compare.stderr
    );
    assert!(
        compare.stdout.contains("REGRESSED shouty / hello"),
        "{}",
        compare.stdout
    );
    // The other way round, the case was fixed.
    let reverse = eval(&cli, vec!["compare".into(), "2".into(), "1".into()]).await;
    assert_eq!(reverse.code, Some(0));
    assert!(
        reverse.stdout.contains("fixed     shouty / hello"),
        "{}",
        reverse.stdout
    );

    let list = eval(&cli, vec!["list".into(), "--suite".into(), "shouty".into()]).await;
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    assert!(
        lines[0].trim_start().starts_with("2 ") && lines[0].contains("failed"),
        "{}",
        list.stdout
    );
    assert!(
        lines[1].contains("passed") && lines[1].ends_with("(baseline)"),
        "{}",
        list.stdout
    );

    let missing = eval(&cli, vec!["bless".into(), "9".into()]).await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("eval run 9 not found"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_that_gives_no_verdict_fails_the_rubric_and_progress_is_printed_in_lines() {
    let addr = start(Api::default()).await;
    let cli = Arc::new(TestCli::new());
    // The stand-in upper-cases what it is sent: the judge's "reply" is no JSON verdict.
    let suite = write(
        &cli,
        "judged.yaml",
        "targets:\n  - model: m\njudge: m\ndataset:\n  - { id: polite, vars: { input: thanks }, assert: [{ type: llm-rubric, value: The answer is polite. }] }\n  - { id: rude, vars: { input: go away }, assert: [{ type: not-llm-rubric, value: The answer is polite. }] }\n",
    );
    let json_file = cli.path().join("r.json");
    // The stand-in judges too (by default the judge is the in-process gateway's).
    let judge = format!("http://{addr}/v1");
    let out = [
        "--graders",
        judge.as_str(),
        "--output",
        "json",
        json_file.to_str().unwrap(),
    ];
    let run = eval(&cli, args(&suite, addr, &out)).await;
    assert_eq!(run.code, Some(100), "{}\n{}", run.stdout, run.stderr);
    let report = read_json(&json_file);
    for result in report["results"].as_array().unwrap() {
        assert_eq!(result["passed"], false, "{result}");
        let reason = result["verdicts"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("no JSON verdict"), "{reason}");
    }
    // Not a terminal: progress comes as plain lines, the last one complete.
    assert!(run.stderr.contains("eval judged: 2/2"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_embeds_through_the_graders_endpoint_not_the_target() {
    let (target, graders) = (Api::default(), Api::default());
    let addr = start(target.clone()).await;
    let graders_addr = start(graders.clone()).await;
    let cli = Arc::new(TestCli::new());
    // Answers are the input upper-cased: `abc` → `ABC` (same length as the reference `xyz`),
    // `a` → `A` (against `xyzxyzxyz`).
    let suite = write(
        &cli,
        "similar.yaml",
        "targets:\n  - model: m\ndataset:\n  - { id: close, vars: { input: abc }, expected: xyz }\n  - { id: far, vars: { input: a }, expected: xyzxyzxyz }\ndefault_assertions:\n  - { type: similar, threshold: 0.99 }\n",
    );
    let json_file = cli.path().join("r.json");
    let graders_url = format!("http://{graders_addr}/v1");
    let out = [
        "--graders",
        graders_url.as_str(),
        "--output",
        "json",
        json_file.to_str().unwrap(),
    ];
    let run = eval(&cli, args(&suite, addr, &out)).await;
    assert_eq!(run.code, Some(100), "{}\n{}", run.stdout, run.stderr);
    let report = read_json(&json_file);
    assert_eq!(
        report["results"][0]["passed"], true,
        "{}",
        report["results"][0]
    );
    assert_eq!(
        report["results"][1]["passed"], false,
        "{}",
        report["results"][1]
    );
    let metric = report["results"][0]["verdicts"][0]["metric"]
        .as_f64()
        .unwrap();
    assert!((metric - 1.0).abs() < 1e-6, "{metric}");
    // Two chat calls at the target, two embedding calls at the graders.
    assert_eq!(target.calls.load(Ordering::SeqCst), 2);
    assert_eq!(graders.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_and_reports_that_cannot_apply_are_refused_with_exit_1() {
    let addr = start(Api::default()).await;
    let cli = Arc::new(TestCli::new());
    let shouty = write(&cli, "shouty.yaml", SUITE);
    let other = write(&cli, "other.yaml", SUITE);
    for suite in [&shouty, &other] {
        let run = eval(&cli, args(suite, addr, &[])).await;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    }
    // Runs 1 (shouty) and 2 (other) belong to different suites.
    let compare = eval(&cli, vec!["compare".into(), "1".into(), "2".into()]).await;
    assert_eq!(compare.code, Some(1));
    assert!(
        compare
            .stderr
            .contains("run 1 is of suite shouty and run 2 of suite other"),
        "{}",
        compare.stderr
    );
    let baseline = eval(&cli, args(&shouty, addr, &["--baseline", "2"])).await;
    assert_eq!(baseline.code, Some(1));
    assert!(
        baseline
            .stderr
            .contains("baseline run 2 is of suite other, not shouty"),
        "{}",
        baseline.stderr
    );
    let missing = eval(&cli, args(&shouty, addr, &["--baseline", "99"])).await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("eval run 99 not found"),
        "{}",
        missing.stderr
    );
    let bad = eval(&cli, args(&shouty, addr, &["--baseline", "latest"])).await;
    assert_eq!(bad.code, Some(2), "clap refuses the value: {}", bad.stderr);
    assert!(
        bad.stderr.contains("expected `blessed` or a run id"),
        "{}",
        bad.stderr
    );

    // One report file cannot hold two suites.
    let mut two = args(&shouty, addr, &["--output", "json", "r.json"]);
    two.insert(2, other.clone());
    let run = eval(&cli, two).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("--output needs a single suite"),
        "{}",
        run.stderr
    );
}
