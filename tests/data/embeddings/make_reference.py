"""Writes minilm_reference.json: texts and the vectors that the real sentence-transformers
package gives for them with all-MiniLM-L6-v2, the independent answers that
src/engine/embedder.rs is tested against. See README.md beside this file for the command."""

import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

LONG = " ".join(
    [
        "The gateway receives a request, checks the caller's key and rate limit, resolves the",
        "prompt and the route, and then calls the provider, retrying on errors that are worth",
        "retrying and falling back to another deployment when the first one keeps failing.",
    ]
    * 8
)

TEXTS = [
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    LONG,  # about 450 tokens: cut at max_seq_length (256)
    "Café naïve résumé: Übergrößenträger, Ελληνικά, русский текст.",
    "I love pizza 🍕🍕 and tacos 🌮! 😀👍🏽",
    "我喜欢吃北京烤鸭。東京は日本の首都です。",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * 2).collect(); println!(\"{v:?}\"); }",
    "   leading and trailing whitespace\t\n  ",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
]


# CLS-pooled vectors are recorded for the first few texts only.
CLS_TEXTS = 4


def rounded(vectors):
    """float32 carries about 7 significant digits; 8 keep every one of them."""
    return [[float(f"{x:.8g}") for x in v] for v in vectors.tolist()]


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    tokens = model.preprocess(TEXTS)["attention_mask"].sum(dim=1).tolist()
    # The same network with CLS pooling, for the test of a 1_Pooling config that asks for it.
    transformer = Transformer(model_dir, max_seq_length=model.max_seq_length)
    cls = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), "cls"), Normalize()],
        device="cpu",
    )
    cls_vectors = cls.encode(TEXTS[:CLS_TEXTS], normalize_embeddings=True, convert_to_numpy=True)
    reference = {
        "model": "all-MiniLM-L6-v2",
        "produced_by": f"sentence-transformers {sentence_transformers.__version__}, "
        f"torch {torch.__version__}, encode(texts, normalize_embeddings=True)",
        "max_seq_length": model.max_seq_length,
        "texts": TEXTS,
        "tokens": tokens,
        "vectors": rounded(vectors),
        "cls_vectors": rounded(cls_vectors),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
