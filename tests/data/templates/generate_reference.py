#!/usr/bin/env python3
"""Record reference chat-template renderings, made by transformers (Jinja2), for pasarela's tests.

- SmolLM2: the template in the GGUF's `tokenizer.chat_template` (read with the `gguf` package),
  applied by a transformers tokenizer built from the same GGUF (`convert_gguf_tokenizer`) with
  `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
- llama3_style.jinja (a template written for these tests): rendered by transformers'
  `render_jinja_template`, the function `apply_chat_template` calls, with
  bos_token="<|begin_of_text|>" and eos_token="<|eot_id|>".

A conversation the template refuses through `raise_exception` is recorded with `"error"`: the
exception's message. Usage (see README.md):

    python3 generate_reference.py MODEL.gguf
"""

import json
import sys
from importlib.metadata import version

import gguf
from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerFast
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    GGUF_TOKENIZER_MAPPING,
    convert_gguf_tokenizer,
)
from transformers.utils.chat_template_utils import render_jinja_template


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write(path, document):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False, indent=1)
        f.write("\n")


def render_cases(conversations, render):
    cases = []
    for conversation in conversations:
        case = dict(conversation)
        try:
            case["expected"] = render(conversation)
        except TemplateError as e:
            case["error"] = str(e)
        cases.append(case)
    return cases


def smollm2(model):
    reader = gguf.GGUFReader(model)
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    tokenizer_dict = {
        name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata
    }
    backend, _ = convert_gguf_tokenizer(metadata["general.architecture"], tokenizer_dict)
    tokens = metadata["tokenizer.ggml.tokens"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokens[metadata["tokenizer.ggml.bos_token_id"]],
        eos_token=tokens[metadata["tokenizer.ggml.eos_token_id"]],
        chat_template=metadata["tokenizer.chat_template"],
    )

    def render(conversation):
        return tokenizer.apply_chat_template(
            conversation["messages"],
            tools=conversation.get("tools"),
            add_generation_prompt=conversation["add_generation_prompt"],
            tokenize=False,
        )

    return render_cases(load("conversations.json"), render)


def llama3_style():
    with open("llama3_style.jinja", encoding="utf-8") as f:
        template = f.read()

    def render(conversation):
        rendered, _ = render_jinja_template(
            conversations=[conversation["messages"]],
            tools=conversation.get("tools"),
            chat_template=template,
            add_generation_prompt=conversation["add_generation_prompt"],
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
        )
        return rendered[0]

    return render_cases(load("llama3_style_conversations.json"), render)


def main():
    model = sys.argv[1]
    generated_by = (
        f"tests/data/templates/generate_reference.py with transformers {version('transformers')}, "
        f"jinja2 {version('jinja2')}, gguf {version('gguf')}"
    )
    write(
        "smollm2_reference.json",
        {
            "model": model.rsplit("/", 1)[-1],
            "template": "the GGUF's tokenizer.chat_template",
            "generated_by": generated_by + ": tokenizer.apply_chat_template(messages, tokenize=False)",
            "cases": smollm2(model),
        },
    )
    write(
        "llama3_style_reference.json",
        {
            "template": "llama3_style.jinja",
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "generated_by": generated_by + ": render_jinja_template(...)",
            "cases": llama3_style(),
        },
    )


if __name__ == "__main__":
    main()
