//! `pasarela eval run` in-process: the CLI starts a gateway with the local models in its own
//! process, resolves a registry prompt, calls the chat model and scores with the embedder.

use std::process::Command;

use serde_json::Value;

use crate::{CHAT, config, models_or_skip};

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

#[test]
fn a_suite_runs_in_process_against_a_registry_prompt_and_the_local_models() {
    let Some(models) =
        models_or_skip("a_suite_runs_in_process_against_a_registry_prompt_and_the_local_models")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("pasarela.toml"),
        format!("{}\n[store]\ndata_dir = {data:?}\n", config(&models, 4, 16)),
    )
    .unwrap();
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
}
