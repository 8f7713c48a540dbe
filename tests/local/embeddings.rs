//! Embeddings from all-MiniLM-L6-v2 through the API.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::{EMBED, config, models_or_skip};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn embeddings_are_normalised_and_base64_matches_float() {
    let Some(dir) = models_or_skip("embeddings_are_normalised_and_base64_matches_float") else {
        return;
    };
    let app = TestApp::spawn(&config(&dir, 1, 4)).await;
    let texts = [
        "A cat sits on the mat.",
        "A kitten is sitting on a rug.",
        "Quarterly revenue grew by 4%.",
    ];
    let resp = app
        .post("/v1/embeddings", &json!({"model": EMBED, "input": texts}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], EMBED);
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() >= 15,
        "{}",
        body["usage"]
    );
    let vectors: Vec<Vec<f32>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.2);

    let resp = app
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": texts[0], "encoding_format": "base64"}),
        )
        .await;
    let body: Value = resp.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, vectors[0]);
}

#[tokio::test]
async fn embeddings_agree_with_sentence_transformers_reference_vectors() {
    let Some(dir) = models_or_skip("embeddings_agree_with_sentence_transformers_reference_vectors")
    else {
        return;
    };
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/embeddings/minilm_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    // Recorded from sentence-transformers: see tests/data/embeddings/README.md.
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let expected = reference["vectors"].as_array().unwrap();
    let app = TestApp::spawn(&config(&dir, 1, 4)).await;
    let body: Value = app
        .post("/v1/embeddings", &json!({"model": EMBED, "input": texts}))
        .await
        .json()
        .await
        .unwrap();
    let got = body["data"].as_array().unwrap();
    assert_eq!(got.len(), texts.len());
    for ((text, want), got) in texts.iter().zip(expected).zip(got) {
        let c = cosine(&floats(want), &floats(&got["embedding"]));
        assert!(c >= 0.9999, "cosine {c} for {text:?}");
    }
}

#[tokio::test]
async fn token_id_input_and_a_wrong_model_kind() {
    let Some(dir) = models_or_skip("token_id_input_and_a_wrong_model_kind") else {
        return;
    };
    let app = TestApp::spawn(&config(&dir, 1, 4)).await;
    // "hello world" in MiniLM's vocabulary; like OpenAI's token input, without special tokens
    // (the embedder adds [CLS] and [SEP]).
    let resp = app
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": [[7592, 2088]]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let by_text: Value = app
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": "hello world"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let by_ids: Value = resp.json().await.unwrap();
    let c = cosine(
        &floats(&by_text["data"][0]["embedding"]),
        &floats(&by_ids["data"][0]["embedding"]),
    );
    assert!(c > 0.9999, "{c}");
    let chat_on_embedder = app
        .chat(json!({"model": EMBED, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    crate::helpers::expect_error(chat_on_embedder, 400).await;
}
