#!/usr/bin/env python3
"""Record reference token ids for a GGUF's tokenizer from two independent implementations.

- transformers' own GGUF -> tokenizer conversion (`convert_gguf_tokenizer`), fed with the file's
  `tokenizer.*` metadata as read by the `gguf` package. (transformers' `from_pretrained(...,
  gguf_file=...)` does the same but imports torch to read the file; this avoids torch.)
- llama.cpp, through llama-cpp-python: `Llama(path, vocab_only=True).tokenize(text, add_bos=False,
  special=True)`.

The ids written are llama.cpp's, the reference implementation of GGUF. Where transformers differs,
the file lists its ids under `transformers_differs`, and `--allow-differences` must name how many
such strings are expected (transformers' conversion ignores `tokenizer.ggml.pre = smollm`, so it
lacks SmolLM2's Digits pre-tokenizer and splits non-ASCII numerals such as `①` differently; for
SentencePiece vocabularies it puts the leading `▁` only before the first stretch of text and never
doubles it, where llama.cpp and SentencePiece put one before every stretch).
Usage (see README.md):

    python3 generate_reference.py MODEL.gguf strings.json smollm2_reference.json [--allow-differences N]
"""

import json
import sys
from importlib.metadata import version

import gguf
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    GGUF_TOKENIZER_MAPPING,
    convert_gguf_tokenizer,
)


def transformers_tokenizer(path):
    reader = gguf.GGUFReader(path)
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    tokenizer_dict = {
        name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata
    }
    backend, _ = convert_gguf_tokenizer(metadata["general.architecture"], tokenizer_dict)
    return backend


def main():
    model, strings_path, out_path = sys.argv[1:4]
    allowed = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--allow-differences" else 0
    with open(strings_path, encoding="utf-8") as f:
        strings = json.load(f)

    hf = transformers_tokenizer(model)
    from llama_cpp import Llama

    llama = Llama(model_path=model, vocab_only=True, verbose=False)

    cases = []
    disagreements = []
    for text in strings:
        hf_ids = hf.encode(text, add_special_tokens=False).ids
        cpp_ids = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        case = {"text": text, "ids": cpp_ids}
        if hf_ids != cpp_ids:
            case["transformers_differs"] = hf_ids
            disagreements.append(text)
        cases.append(case)

    if len(disagreements) != allowed:
        sys.exit(f"{len(disagreements)} strings tokenize differently in transformers and llama.cpp "
                 f"(expected {allowed}): {disagreements}")

    document = {
        "model": model.rsplit("/", 1)[-1],
        "generated_by": (
            "tests/data/tokenizer/generate_reference.py: transformers "
            f"{version('transformers')} convert_gguf_tokenizer (tokenizers {version('tokenizers')}, "
            f"gguf {version('gguf')}) and llama-cpp-python {version('llama_cpp_python')} "
            "Llama(vocab_only=True).tokenize(text, add_bos=False, special=True); ids are llama.cpp's, "
            f"transformers agrees on {len(cases) - len(disagreements)} of {len(cases)} strings "
            "(see transformers_differs)"
        ),
        "add_special_tokens": False,
        "cases": cases,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
