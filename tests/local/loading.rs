//! Model loading: clear errors naming the file, and the Hugging Face cache path.

use std::path::Path;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::{CHAT, models_or_skip};

async fn start_error(config: &str) -> String {
    let config = pasarela::config::Config::parse(config, "test").unwrap();
    match pasarela::server::Application::build(config).await {
        Ok(_) => panic!("the application started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_missing_or_corrupt_model_file_is_a_startup_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("pasarela-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = format!(
        "[engine]\nmodels_dir = \"{}\"\n[models.m]\nkind = \"chat\"\npath = \"nope.gguf\"\n",
        dir.display()
    );
    let err = start_error(&missing).await;
    assert!(err.contains("nope.gguf"), "{err}");

    std::fs::write(dir.join("garbage.gguf"), b"this is not a gguf file at all").unwrap();
    let corrupt = format!(
        "[engine]\nmodels_dir = \"{}\"\n[models.m]\nkind = \"chat\"\npath = \"garbage.gguf\"\n",
        dir.display()
    );
    let err = start_error(&corrupt).await;
    assert!(err.contains("garbage.gguf"), "{err}");

    std::fs::create_dir_all(dir.join("emb")).unwrap();
    std::fs::write(dir.join("emb/config.json"), b"{}").unwrap();
    let embed = format!(
        "[engine]\nmodels_dir = \"{}\"\n[models.e]\nkind = \"embedding\"\npath = \"emb\"\n",
        dir.display()
    );
    let err = start_error(&embed).await;
    assert!(err.contains("emb/"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Builds a Hugging Face cache holding `file` of `repo` the way a hub download leaves it:
/// the content in `blobs/`, linked from `snapshots/<commit>/`, the commit named by `refs/main`.
fn seed_hf_cache(cache: &Path, repo: &str, file: &str, source: &Path) {
    let commit = "4b7a1c0ffee4b7a1c0ffee4b7a1c0ffee4b7a1c0";
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    std::fs::write(folder.join("refs/main"), commit).unwrap();
    let blob = folder.join("blobs/5f1d6a0e9c2b");
    std::os::unix::fs::symlink(source.canonicalize().unwrap(), &blob).unwrap();
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::os::unix::fs::symlink(&blob, snapshot.join(file)).unwrap();
}

#[tokio::test]
async fn a_chat_model_loads_from_an_offline_hugging_face_cache() {
    let Some(dir) = models_or_skip("a_chat_model_loads_from_an_offline_hugging_face_cache") else {
        return;
    };
    // SAFETY: nextest runs each test in its own process, and nothing else in this test reads
    // or writes the environment concurrently.
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    let cache = std::env::temp_dir().join(format!("pasarela-hf-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    seed_hf_cache(
        &cache,
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        file,
        &dir.join("smollm2-135m-instruct").join(file),
    );
    let config = format!(
        "[engine]\nhf_cache_dir = \"{}\"\n[models.{CHAT}]\nkind = \"chat\"\nhf_repo = \"HuggingFaceTB/SmolLM2-135M-Instruct-GGUF\"\nhf_file = \"{file}\"\n",
        cache.display()
    );
    let app = TestApp::spawn(&config).await;
    let resp = app
        .chat(json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["usage"]["completion_tokens"].as_u64().map(|n| n <= 3),
        Some(true)
    );
    std::fs::remove_dir_all(&cache).unwrap();
}
