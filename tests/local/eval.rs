//! `pasarela eval run` in-process: the CLI starts a gateway with the local models in its own
//! process, resolves a registry prompt, calls the chat model and scores with the embedder.

use std::process::Command;

use serde_json::Value;

use crate::{CHAT, EMBED, config, models_or_skip};

fn pasarela(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pasarela"));
    command.args(args).current_dir(dir);
    for key in [
        "PASARELA_CONFIG",
        "PASARELA_DATA_DIR",
        "PASARELA_DATABASE_URL",
        "PASARELA_LISTEN",
        "CI",
    ] {
        command.env_remove(key);
    }
    command.output().unwrap()
}

/// A directory with a config serving the default models and a store of its own.
fn work_dir(models: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("pasarela.toml"),
        format!("{}\n[store]\ndata_dir = {data:?}\n", config(models, 4, 16)),
    )
    .unwrap();
    dir
}

#[test]
fn a_suite_runs_in_process_against_a_registry_prompt_and_the_local_models() {
    let Some(models) =
        models_or_skip("a_suite_runs_in_process_against_a_registry_prompt_and_the_local_models")
    else {
        return;
    };
    let dir = work_dir(&models);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/greeting.yaml");
    let push = pasarela(dir.path(), &["prompts", "push", shipped, "--author", "t"]);
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    std::fs::write(
        dir.path().join("greet.yaml"),
        "targets:\n  - prompt: greeting@latest\n    params: { temperature: 0, max_tokens: 16 }\n\
         dataset:\n  - { id: ada, vars: { name: Ada }, expected: \"Hello Ada, nice to meet you!\" }\n\
         default_assertions:\n  - { type: similar, threshold: 0.3 }\n  - { type: max-tokens, value: 16 }\n  \
         - { type: cost, threshold: 0 }\n",
    )
    .unwrap();
    let run = pasarela(
        dir.path(),
        &["eval", "run", "greet.yaml", "--output", "json", "r.json"],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["endpoint"], "in-process");
    let target = &report["targets"][0];
    assert_eq!(
        target["model"], CHAT,
        "the prompt's model serves the target"
    );
    assert_eq!(target["prompt"]["name"], "greeting");
    assert_eq!(target["prompt"]["version"], 1);
    let result = &report["results"][0];
    assert!(
        result["output"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("ada"),
        "{result}"
    );
    // The embedder scored the answer: a real cosine, not a default.
    let similar = &result["verdicts"][0];
    let cosine = similar["metric"].as_f64().unwrap();
    assert!(cosine > 0.3 && cosine < 1.0, "{similar}");
    assert_eq!(result["cost_usd"], 0.0, "local models cost nothing");
    assert_eq!(result["cached"], false);

    // Again, with a new in-process gateway on another port: the answer comes from the cache.
    let again = pasarela(
        dir.path(),
        &["eval", "run", "greet.yaml", "--output", "json", "r.json"],
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let second: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(
        second["results"][0]["cached"], true,
        "{}",
        second["results"][0]
    );
    assert_eq!(second["results"][0]["output"], result["output"]);
}

#[test]
fn a_label_move_with_require_eval_happens_only_when_the_suite_passes_for_that_version() {
    let Some(models) = models_or_skip(
        "a_label_move_with_require_eval_happens_only_when_the_suite_passes_for_that_version",
    ) else {
        return;
    };
    let dir = work_dir(&models);
    // v1 as shipped (max_tokens 40), v2 the same prompt with max_tokens 4.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/prompts/greeting.yaml"
    ))
    .unwrap();
    let file = dir.path().join("greeting.yaml");
    for text in [
        shipped.clone(),
        shipped.replace("max_tokens: 40", "max_tokens: 4"),
    ] {
        assert_ne!(text, "");
        std::fs::write(&file, &text).unwrap();
        let push = pasarela(
            dir.path(),
            &["prompts", "push", "greeting.yaml", "--author", "t"],
        );
        assert!(
            push.status.success(),
            "{}",
            String::from_utf8_lossy(&push.stderr)
        );
    }
    // Greedy answers: v1 says a sentence, which this suite calls too long.
    std::fs::write(
        dir.path().join("gate.yaml"),
        "targets:\n  - prompt: greeting@production\n    params: { temperature: 0 }\n\
         dataset:\n  - { id: ada, vars: { name: Ada } }\n\
         default_assertions:\n  - { type: max-tokens, value: 5 }\n",
    )
    .unwrap();
    let label = |version: &str| {
        pasarela(
            dir.path(),
            &[
                "prompts",
                "label",
                "greeting",
                version,
                "production",
                "--force",
                "--author",
                "t",
                "--require-eval",
                "gate.yaml",
            ],
        )
    };
    let refused = label("1");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("suite gate failed for greeting#1 (run 1): label `production` not moved"),
        "{stderr}"
    );
    let show = pasarela(dir.path(), &["prompts", "show", "greeting@production"]);
    assert!(!show.status.success(), "production must not exist yet");

    let moved = label("2");
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(stdout.contains("stored as run 2"), "{stdout}");
    let show = pasarela(dir.path(), &["prompts", "show", "greeting@production"]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success() && shown.contains("max_tokens: 4"),
        "{shown}"
    );

    // The stored runs name the version each one tested.
    let list = pasarela(dir.path(), &["eval", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_another_gateway_similar_still_embeds_with_the_local_embedder() {
    let Some(models) =
        models_or_skip("against_another_gateway_similar_still_embeds_with_the_local_embedder")
    else {
        return;
    };
    // The target: a gateway with the chat model only (no embedder to ask).
    let chat_only = format!(
        "[engine]\nmodels_dir = {models:?}\n\n[models.{CHAT}]\nkind = \"chat\"\n\
         path = \"smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf\"\n"
    );
    let target = crate::helpers::TestApp::spawn(&chat_only).await;
    // The CLI's own config: the embedder only.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("pasarela.toml"),
        format!(
            "[engine]\nmodels_dir = {models:?}\n\n[models.{EMBED}]\nkind = \"embedding\"\n\
             path = \"all-minilm-l6-v2\"\n\n[store]\ndata_dir = {data:?}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("s.yaml"),
        format!(
            "targets:\n  - model: {CHAT}\n    params: {{ temperature: 0, max_tokens: 12 }}\n\
             dataset:\n  - {{ id: capital, vars: {{ input: What is the capital of France? Answer in one word. }}, \
             expected: The capital of France is Paris. }}\n\
             default_assertions:\n  - {{ type: similar, threshold: 0.5 }}\n"
        ),
    )
    .unwrap();
    let against = format!("{}/v1", target.base);
    let dir_path = dir.path().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        pasarela(
            &dir_path,
            &[
                "eval",
                "run",
                "s.yaml",
                "--against",
                &against,
                "--output",
                "json",
                "r.json",
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{stderr}",
        String::from_utf8_lossy(&run.stdout)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let verdict = &report["results"][0]["verdicts"][0];
    assert!(verdict["metric"].as_f64().unwrap() > 0.5, "{verdict}");
    target.stop().await;
}
