#!/usr/bin/env python3
"""Write tiny_spm.gguf: a made-up SentencePiece-style vocabulary (tokenizer.ggml.model = llama, no
merges, scores, byte-fallback tokens), no tensors. It exercises pasarela's SentencePiece path; its
reference ids come from generate_reference.py like SmolLM2's. Usage: python3 make_tiny_spm.py OUT.gguf
"""

import sys

import gguf

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6

PIECES = [
    "▁", "h", "e", "l", "o", "w", "r", "d", "a", "c", "f", "t", "é", "!", "s", "n", "i",
    "▁h", "▁w", "ll", "he", "▁he", "▁hell", "▁hello", "or", "▁wor", "▁world", "ld", "▁c", "▁ca",
    "▁caf", "▁café", "▁t", "▁the", "▁a", "in", "▁in", "▁s", "es", "st", "▁test", "▁▁",
]


def main():
    writer = gguf.GGUFWriter(sys.argv[1], "llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + PIECES
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(PIECES)
    # SentencePiece scores: control and byte tokens 0, pieces ranked by their order.
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(PIECES))]
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(8)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
