#!/usr/bin/env python3
"""The measuring half of scripts/bench-local: one subcommand per part, each writing JSON.

    prompts      the 128-token chat prompts, cut with llama.cpp's tokenizer and the GGUF's own chat
                 template (needs llama_cpp: run it with the benchmark's venv)
    sentences    the 1,000 short sentences for the embedding runs (standard library only)
    llamacpp     llama.cpp through llama-cpp-python on the same GGUF file (venv)
    st           sentence-transformers on the same sentences (venv)
    pasarela     the running gateway, through its HTTP API (standard library only)
    summary      reads the JSON files of the parts that ran and prints the table

Only the standard library is used outside the `llamacpp`, `st` and `prompts` subcommands, so the
HTTP side needs no client package. The script, not this file, starts and stops processes and
makes sure that no two model-running processes share the cores.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

# A text of our own for the prompts. The prompts ask for long answers because the decode figures
# count generated tokens and a 135M model stops early on short questions.
STORY = (
    "The lighthouse on Gull Rock had been automated for eleven years when Mara Ellison rowed "
    "out to it in the last week of October, carrying a toolbox, a sack of potatoes and a letter "
    "from the harbour board that nobody on the island believed. The letter said the light had "
    "failed three nights running and that a keeper was needed until the new lamp arrived from "
    "the mainland. Mara had kept the light before, as a girl, beside her grandfather, and she "
    "remembered the smell of paraffin and salt, the iron stairs that rang under every step, and "
    "the way the beam swept across the black water like a slow and patient hand. On the first "
    "night she climbed to the lantern room and found the lamp whole, the lens clean and the "
    "clockwork wound. Yet at midnight the light went out, and in the dark below the tower she "
    "heard someone singing an old fishing song that only her grandfather had known. She lit a "
    "candle, went down the stairs one by one, and opened the door to the storeroom, where the "
    "singing stopped as suddenly as it had begun."
)

# One instruction per concurrent stream; the first is also the single-stream prompt. The story
# is trimmed after each instruction so that every rendered prompt is exactly the same length.
INSTRUCTIONS = [
    "Continue the following story in great detail, in at least five long paragraphs:",
    "Retell the following story from the point of view of the grandfather, at great length:",
    "Write a long letter from Mara to her sister describing the events of this story:",
    "Write a detailed newspaper article, with quotes from islanders, about this story:",
    "Describe every room of the lighthouse in this story, one long paragraph per room:",
    "Write the next chapter of this story, with dialogue, at least six hundred words:",
    "Explain in a long essay what the singing in this story might mean and why:",
    "Write a long poem, at least twenty stanzas, that tells the following story:",
]

# Words for the embedding sentences, combined by a seeded generator: 1,000 short sentences that
# differ from one another, the same on every run.
SUBJECTS = ["The old fisherman", "A small child", "My neighbour", "The new teacher", "Our dog",
            "The city council", "A tired nurse", "The baker", "Two students", "The train driver",
            "A quiet librarian", "The football team", "Her grandmother", "The young doctor",
            "A stray cat", "The museum guide", "Every farmer", "The night guard"]
VERBS = ["painted", "repaired", "forgot", "sold", "carried", "found", "cleaned", "described",
         "borrowed", "watched", "photographed", "ordered", "built", "lost", "measured", "tasted"]
OBJECTS = ["a red bicycle", "the broken window", "an old map of the harbour",
           "three loaves of bread", "the wooden fence", "a letter from Spain",
           "the kitchen table", "a box of apples", "the station clock", "a pair of boots",
           "the garden gate", "a silver spoon", "the evening newspaper", "a blue umbrella",
           "the church bell", "a jar of honey"]
ENDINGS = ["", " before breakfast", " in the rain", " after the storm", " on Sunday morning",
           " without a word", " near the river", " for the third time", " at the market",
           " with great care", " late last night", " behind the school"]


def die(message):
    print(f"bench_local.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def median(values):
    return statistics.median(values) if values else None


def percentile(values, q):
    """Nearest-rank percentile: the smallest sample with at least q % of samples at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


# --- machine load -------------------------------------------------------------------------------
# Busy CPU time of the machine and of the processes under test, so that the summary can say how
# much of the cores other work took during each part.

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # user nice system (idle iowait) irq softirq steal
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks[0:3]) + sum(ticks[5:8])) / CLK_TCK


def process_cpu_seconds(pid):
    """User + system CPU of a process and its waited-for children, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # Fields 14-17 of the file (utime stime cutime cstime) are 11-14 after the command name.
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


class LoadMeter:
    """CPU share that processes other than `pids` took while the meter ran, in % of the machine."""

    def __init__(self, pids):
        self.pids = pids
        self.machine = machine_busy_seconds()
        self.own = sum(process_cpu_seconds(p) for p in pids)
        self.wall = time.monotonic()

    def others_pct(self):
        machine = machine_busy_seconds() - self.machine
        own = sum(process_cpu_seconds(p) for p in self.pids) - self.own
        wall = time.monotonic() - self.wall
        cores = os.cpu_count() or 1
        return max(0.0, 100.0 * (machine - own) / (wall * cores)) if wall > 0 else 0.0


def peak_rss_mb(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return None


# --- inputs -------------------------------------------------------------------------------------

def render_chat(template, content, bos, eos):
    """The prompt text the model sees for one user message, rendered from the GGUF's template the
    way Hugging Face renders chat templates (trim_blocks and lstrip_blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=[{"role": "user", "content": content}], add_generation_prompt=True,
        bos_token=bos, eos_token=eos)


def cmd_prompts(args):
    from llama_cpp import Llama

    vocab = Llama(args.gguf, vocab_only=True, verbose=False)
    template = vocab.metadata.get("tokenizer.chat_template")
    if not template:
        die(f"{args.gguf} has no tokenizer.chat_template")
    bos = vocab.detokenize([vocab.token_bos()], special=True).decode()
    eos = vocab.detokenize([vocab.token_eos()], special=True).decode()

    def tokens_of(content):
        text = render_chat(template, content, bos, eos)
        return vocab.tokenize(text.encode(), add_bos=False, special=True)

    words = STORY.split()
    prompts = []
    for instruction in INSTRUCTIONS:
        chosen = None
        # The longest cut of the story whose rendered prompt still fits; then the cut's last word
        # is shortened letter by letter if a whole word overshoots by a token.
        for n in range(1, len(words) + 1):
            content = f"{instruction}\n\n{' '.join(words[:n])}"
            count = len(tokens_of(content))
            if count == args.tokens:
                chosen = content
            if count > args.tokens:
                if chosen is None:
                    for k in range(len(words[n - 1]) - 1, 0, -1):
                        cut = f"{instruction}\n\n{' '.join(words[:n - 1] + [words[n - 1][:k]])}"
                        if len(tokens_of(cut)) == args.tokens:
                            chosen = cut
                            break
                break
        if chosen is None:
            die(f"could not cut a prompt of exactly {args.tokens} tokens for: {instruction}")
        tokens = tokens_of(chosen)
        assert len(tokens) == args.tokens
        prompts.append({"content": chosen, "tokens": tokens})
    write_json(args.out, {"prompt_tokens": args.tokens, "prompts": prompts})


def cmd_sentences(args):
    rng = random.Random(3)
    seen = set()
    sentences = []
    while len(sentences) < args.count:
        sentence = (f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
                    f"{rng.choice(ENDINGS)}.")
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    write_json(args.out, sentences)


# --- llama.cpp ----------------------------------------------------------------------------------

def cmd_llamacpp(args):
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    prompt = read_json(args.prompts)["prompts"][0]["tokens"]
    started = time.perf_counter()
    llm = Llama(args.gguf, n_ctx=len(prompt) + args.max_tokens + 64, n_batch=max(512, len(prompt)),
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    load_secs = time.perf_counter() - started
    n_vocab = llm.n_vocab()
    eos = llm.token_eos()

    def greedy():
        last = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(last, shape=(n_vocab,))
        return int(np.argmax(logits))

    def one_run():
        """Prompt seconds, decode seconds for max_tokens - 1 tokens, and where EOS came."""
        llm.reset()  # the next eval drops the whole KV cache
        t0 = time.perf_counter()
        llm.eval(prompt)
        token = greedy()
        t1 = time.perf_counter()
        generated = [token]
        # Greedy decoding that does not stop at EOS, so that every run decodes max_tokens
        # tokens; where EOS would have ended the answer is recorded.
        while len(generated) < args.max_tokens:
            llm.eval([token])
            token = greedy()
            generated.append(token)
        t2 = time.perf_counter()
        eos_at = generated.index(eos) if eos in generated else None
        return t1 - t0, t2 - t1, eos_at, generated

    meter = LoadMeter([os.getpid()])
    one_run()  # warm-up, not recorded
    runs = []
    for _ in range(args.repeats):
        prompt_secs, decode_secs, eos_at, generated = one_run()
        runs.append({"prompt_secs": prompt_secs, "decode_secs": decode_secs, "eos_at": eos_at,
                     "prompt_tps": len(prompt) / prompt_secs,
                     "decode_tps": (len(generated) - 1) / decode_secs})
    text = llm.detokenize(generated).decode(errors="replace")
    write_json(args.out, {
        "version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "threads": args.threads,
        "prompt_tokens": len(prompt),
        "generated_tokens": args.max_tokens,
        "load_secs": load_secs,
        "runs": runs,
        "prompt_tps": median([r["prompt_tps"] for r in runs]),
        "decode_tps": median([r["decode_tps"] for r in runs]),
        "prefill_ms": 1e3 * median([r["prompt_secs"] for r in runs]),
        "answer_start": text[:200],
        "peak_rss_mb": peak_rss_mb(),
        "others_cpu_pct": meter.others_pct(),
    })


# --- sentence-transformers ----------------------------------------------------------------------

def cmd_st(args):
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    sentences = read_json(args.sentences)
    started = time.perf_counter()
    model = SentenceTransformer(args.model_dir, device="cpu")
    load_secs = time.perf_counter() - started
    meter = LoadMeter([os.getpid()])
    by_batch = {}
    for batch in args.batches:
        # A warm-up pass, not recorded.
        model.encode(sentences[:batch], batch_size=batch, show_progress_bar=False)
        secs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            vectors = model.encode(sentences, batch_size=batch, show_progress_bar=False)
            secs.append(time.perf_counter() - t0)
            if len(vectors) != len(sentences):
                die(f"sentence-transformers returned {len(vectors)} vectors for {len(sentences)}")
        by_batch[str(batch)] = len(sentences) / median(secs)
    best = max(by_batch, key=by_batch.get)
    write_json(args.out, {
        "version": sentence_transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sentences": len(sentences),
        "load_secs": load_secs,
        "per_sec_by_batch": by_batch,
        "best_batch": int(best),
        "per_sec": by_batch[best],
        "reference": [[float(x) for x in v] for v in vectors[:16]],
        "peak_rss_mb": peak_rss_mb(),
        "others_cpu_pct": meter.others_pct(),
    })


# --- pasarela over HTTP -------------------------------------------------------------------------

def post_json(url, body, timeout):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        die(f"POST {url} answered {e.code}: {e.read().decode(errors='replace')[:500]}")


def stream_chat(url, body, timeout):
    """Sends one streamed chat request; returns when the first and last content arrived (seconds
    after sending), the arrival of every content chunk (perf_counter clock), the usage chunk and
    the text. Fails on an error frame or a missing [DONE]."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    sent = time.perf_counter()
    arrivals = []
    usage = None
    pieces = []
    done = False
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for raw in response:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    die(f"the stream ended with an error: {chunk['error']}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        arrivals.append(time.perf_counter())
                        pieces.append(content)
    except urllib.error.HTTPError as e:
        die(f"POST {url} (stream) answered {e.code}: {e.read().decode(errors='replace')[:500]}")
    if not done:
        die("a stream ended without data: [DONE]")
    if usage is None:
        die("a stream with stream_options.include_usage carried no usage chunk")
    if not arrivals:
        die("a stream carried no content")
    return {"first": arrivals[0] - sent, "last": arrivals[-1] - sent, "arrivals": arrivals,
            "usage": usage, "text": "".join(pieces)}


def chat_body(model, content, max_tokens, stream):
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def decode_tps(result):
    after_first = result["usage"]["completion_tokens"] - 1
    span = result["last"] - result["first"]
    return after_first / span if after_first > 0 and span > 0 else None


def cmd_pasarela(args):
    base = args.url.rstrip("/")
    chat_url, embed_url = f"{base}/v1/chat/completions", f"{base}/v1/embeddings"
    prompts = [p["content"] for p in read_json(args.prompts)["prompts"]]
    sentences = read_json(args.sentences)
    timeout = args.timeout
    out = {}

    # The exact prompt size as pasarela counts it, from a non-streamed twin of the prompt.
    twin = post_json(chat_url, chat_body(args.chat_model, prompts[0], 1, False), timeout)
    out["prompt_tokens"] = twin["usage"]["prompt_tokens"]

    # Single stream: prompt tokens/s from time to first token, decode tokens/s after it.
    meter = LoadMeter([os.getpid(), args.pid])
    stream_chat(chat_url, chat_body(args.chat_model, prompts[0], args.max_tokens, True), timeout)
    runs = []
    for _ in range(args.repeats):
        r = stream_chat(chat_url, chat_body(args.chat_model, prompts[0], args.max_tokens, True),
                        timeout)
        if r["usage"]["prompt_tokens"] != out["prompt_tokens"]:
            die(f"prompt_tokens {r['usage']['prompt_tokens']} streamed, "
                f"{out['prompt_tokens']} non-streamed")
        runs.append({"ttft_secs": r["first"], "decode_secs": r["last"] - r["first"],
                     "completion_tokens": r["usage"]["completion_tokens"],
                     "prompt_tps": r["usage"]["prompt_tokens"] / r["first"],
                     "decode_tps": decode_tps(r)})
        answer = r["text"]
    out["single"] = {
        "runs": runs,
        "prompt_tps": median([r["prompt_tps"] for r in runs]),
        "decode_tps": median([r["decode_tps"] for r in runs if r["decode_tps"]]),
        "answer_start": answer[:200],
        "others_cpu_pct": meter.others_pct(),
    }

    # Concurrent streams, started together. The aggregate decode rate is counted over the span
    # from the first stream's first token to the last stream's last token, which includes the
    # prefills of streams admitted later; the rate while every stream is decoding (from the last
    # first token to the first last token) is reported beside it.
    meter = LoadMeter([os.getpid(), args.pid])
    results = [None] * args.streams
    errors = []
    gate = threading.Barrier(args.streams + 1)

    def client(i):
        try:
            gate.wait()
            results[i] = stream_chat(chat_url, chat_body(args.chat_model, prompts[i % len(prompts)],
                                                         args.max_tokens, True), timeout)
        except SystemExit as e:  # die() in a thread
            errors.append(str(e))
        except Exception as e:  # noqa: BLE001 - reported below, with the others
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.streams)]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors or any(r is None for r in results):
        die(f"concurrent streams failed: {errors}")
    first = min(r["arrivals"][0] for r in results)
    last = max(r["arrivals"][-1] for r in results)
    completion = [r["usage"]["completion_tokens"] for r in results]
    all_from = max(r["arrivals"][0] for r in results)
    all_to = min(r["arrivals"][-1] for r in results)
    steady_tps = None
    if all_to > all_from:
        # Chunks in the window, each stream's scaled to tokens by its own tokens-per-chunk (a
        # chunk carries whatever text its tokens completed, usually one token).
        tokens = 0.0
        for r, c in zip(results, completion):
            inside = sum(1 for t in r["arrivals"] if all_from < t <= all_to)
            tokens += inside * (c - 1) / max(1, len(r["arrivals"]) - 1)
        steady_tps = tokens / (all_to - all_from)
    out["concurrent"] = {
        "streams": args.streams,
        "completion_tokens": completion,
        "ttft_secs": [r["first"] for r in results],
        "chunks": [len(r["arrivals"]) for r in results],
        "decode_span_secs": last - first,
        "decode_tps": sum(c - 1 for c in completion) / (last - first),
        "all_decoding_secs": max(0.0, all_to - all_from),
        "all_decoding_tps": steady_tps,
        "end_to_end_tps": sum(completion) / wall,
        "wall_secs": wall,
        "others_cpu_pct": meter.others_pct(),
    }

    # Time to first token, sequential requests that stop after one token.
    meter = LoadMeter([os.getpid(), args.pid])
    ttfts = []
    for _ in range(args.ttft_requests):
        r = stream_chat(chat_url, chat_body(args.chat_model, prompts[0], 1, True), timeout)
        ttfts.append(r["first"])
    out["ttft"] = {"requests": len(ttfts), "p50_ms": 1e3 * median(ttfts),
                   "p99_ms": 1e3 * percentile(ttfts, 99), "all_ms": [1e3 * t for t in ttfts],
                   "others_cpu_pct": meter.others_pct()}

    # Embeddings: every batch size over all sentences, one request at a time.
    meter = LoadMeter([os.getpid(), args.pid])
    by_batch = {}
    vectors = None
    for batch in args.batches:
        post_json(embed_url, {"model": args.embed_model, "input": sentences[:batch]}, timeout)
        secs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            got = []
            for i in range(0, len(sentences), batch):
                answer = post_json(embed_url, {"model": args.embed_model,
                                               "input": sentences[i:i + batch]}, timeout)
                data = sorted(answer["data"], key=lambda d: d["index"])
                got.extend(d["embedding"] for d in data)
            secs.append(time.perf_counter() - t0)
            if len(got) != len(sentences):
                die(f"pasarela returned {len(got)} embeddings for {len(sentences)} inputs")
        vectors = got
        by_batch[str(batch)] = len(sentences) / median(secs)
    best = max(by_batch, key=by_batch.get)
    out["embeddings"] = {"sentences": len(sentences), "per_sec_by_batch": by_batch,
                         "best_batch": int(best), "per_sec": by_batch[best],
                         "dims": len(vectors[0]), "first": vectors[:16],
                         "others_cpu_pct": meter.others_pct()}
    write_json(args.out, out)


# --- summary ------------------------------------------------------------------------------------

def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def cmd_summary(args):
    def load(name):
        path = os.path.join(args.work, f"{name}.json")
        return read_json(path) if os.path.exists(path) else None

    llama, st, gw = load("llamacpp"), load("st"), load("pasarela")
    env = os.environ
    target_agg = float(env.get("TARGET_AGGREGATE_RATIO", "2.5"))
    target_embed = float(env.get("TARGET_EMBED_RATIO", "1.0"))

    def env_float(name):
        return float(env[name]) if env.get(name) else None

    def num(value, fmt="{:.1f}"):
        return "—" if value is None else fmt.format(value)

    def ratio(a, b):
        return a / b if a is not None and b else None

    def verdict(r, target):
        return "" if r is None else ("met" if r >= target else "MISSED")

    g = gw or {}
    single = g.get("single", {})
    conc = g.get("concurrent", {})
    ttft = g.get("ttft", {})
    emb = g.get("embeddings", {})
    rows = []
    rows.append(("prompt tokens/s, 1 stream", single.get("prompt_tps"),
                 llama and llama["prompt_tps"], "llama.cpp", None))
    rows.append(("decode tokens/s, 1 stream", single.get("decode_tps"),
                 llama and llama["decode_tps"], "llama.cpp", None))
    rows.append((f"decode tokens/s, {conc.get('streams', 8)} streams", conc.get("decode_tps"),
                 single.get("decode_tps"), "pasarela 1 stream", target_agg))
    rows.append(("embeddings/s, 1,000 sentences", emb.get("per_sec"),
                 st and st["per_sec"], "sentence-transformers", target_embed))

    line = "{:<32}{:>11}{:>11}  {:<22}{:>8}   {}"
    print()
    print("== pasarela local models against llama.cpp and sentence-transformers")
    print(f"machine: {env.get('BENCH_CORES', '?')} cores, {env.get('BENCH_CPU_MODEL', '?')}; "
          f"threads: {env.get('BENCH_THREADS', '?')}; "
          f"compilers seen during the runs (max): {env.get('BENCH_MAX_COMPILERS', '?')}")
    print(f"pasarela {env.get('BENCH_PASARELA_REV', '?')}", end="")
    if llama:
        print(f"; llama-cpp-python {llama['version']}", end="")
    if st:
        print(f"; sentence-transformers {st['version']} (torch {st['torch']})", end="")
    print()
    print()
    print(line.format("", "pasarela", "peer", "peer is", "ratio", "target"))
    for label, ours, theirs, peer, target in rows:
        r = ratio(ours, theirs)
        tgt = "" if target is None else f">= {target:g}x: {verdict(r, target) or 'not measured'}"
        print(line.format(label, num(ours), num(theirs), peer, num(r, "{:.2f}x"), tgt))
    print(line.format("time to first token p50 (ms)", num(ttft.get("p50_ms")),
                      num(llama and llama["prefill_ms"]), "llama.cpp prefill", "", ""))
    print(line.format("time to first token p99 (ms)", num(ttft.get("p99_ms")), "", "", "", ""))
    print(line.format("load time (s)", num(env_float("BENCH_LOAD_SECS"), "{:.2f}"), "",
                      "start to /readyz", "", ""))
    print(line.format("peak RSS (MB)", num(env_float("BENCH_PEAK_RSS_MB")), "", "VmHWM", "", ""))
    print()

    if gw:
        print(f"prompt: {gw['prompt_tokens']} tokens as pasarela counts them "
              f"(llama.cpp's tokenizer and the GGUF template: "
              f"{(llama or {}).get('prompt_tokens', read_json(args.prompts)['prompt_tokens'])})")
        print("single stream, each run: " + "; ".join(
            f"TTFT {1e3 * r['ttft_secs']:.0f} ms, {r['completion_tokens']} tokens, "
            f"{num(r['decode_tps'])} tok/s" for r in single["runs"]))
        print(f"{conc['streams']} streams: completion tokens {conc['completion_tokens']}; "
              f"TTFT {min(conc['ttft_secs']) * 1e3:.0f}–{max(conc['ttft_secs']) * 1e3:.0f} ms; "
              f"decode span {conc['decode_span_secs']:.2f} s")
        print(f"  while all {conc['streams']} were decoding: {num(conc['all_decoding_tps'])} tok/s "
              f"over {conc['all_decoding_secs']:.2f} s; end to end (request sent to last token): "
              f"{conc['end_to_end_tps']:.1f} tok/s over {conc['wall_secs']:.2f} s")
        print(f"time to first token over {ttft['requests']} sequential requests (p99 is the "
              f"nearest rank): min {min(ttft['all_ms']):.1f} ms, max {max(ttft['all_ms']):.1f} ms")
        print("embeddings/s by batch size: pasarela " + ", ".join(
            f"{b}: {v:.0f}" for b, v in emb["per_sec_by_batch"].items()), end="")
        if st:
            print("; sentence-transformers " + ", ".join(
                f"{b}: {v:.0f}" for b, v in st["per_sec_by_batch"].items()), end="")
        print()
        if st:
            cos = [cosine(a, b) for a, b in zip(emb["first"], st["reference"])]
            print(f"embedding agreement with sentence-transformers, first {len(cos)} sentences: "
                  f"cosine min {min(cos):.6f}")
        print(f"pasarela's answer (greedy) starts: {single['answer_start'][:100]!r}")
    if llama:
        eos_at = llama["runs"][0]["eos_at"]
        eos_text = (f"no EOS in its {llama['generated_tokens']} greedy tokens" if eos_at is None
                    else f"its greedy answer would have ended (EOS) after {eos_at} tokens")
        print(f"llama.cpp: load {llama['load_secs']:.2f} s, peak RSS {llama['peak_rss_mb']:.0f} MB "
              f"(Python process), {eos_text}; "
              f"runs: " + "; ".join(f"{r['prompt_tps']:.0f} / {r['decode_tps']:.1f}"
                                    for r in llama["runs"]) + " (prompt / decode tok/s)")
        print(f"llama.cpp's answer (greedy) starts: {llama['answer_start'][:100]!r}")
    if st:
        print(f"sentence-transformers: load {st['load_secs']:.2f} s, peak RSS "
              f"{st['peak_rss_mb']:.0f} MB (Python process), {st['threads']} torch threads")
    parts = [("llama.cpp", llama), ("sentence-transformers", st)]
    if gw:
        parts += [("pasarela single stream", single), ("pasarela streams", conc),
                  ("pasarela TTFT", ttft), ("pasarela embeddings", emb)]
    shares = [f"{name} {p['others_cpu_pct']:.1f}%" for name, p in parts if p]
    if shares:
        print("CPU taken by other work during each part, % of the machine: " + ", ".join(shares))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prompts")
    p.add_argument("--gguf", required=True)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--out", required=True)

    p = sub.add_parser("sentences")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--out", required=True)

    p = sub.add_parser("llamacpp")
    p.add_argument("--gguf", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)

    p = sub.add_parser("st")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--sentences", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)

    p = sub.add_parser("pasarela")
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True, help="the server's process, for CPU shares")
    p.add_argument("--prompts", required=True)
    p.add_argument("--sentences", required=True)
    p.add_argument("--chat-model", default="smollm2-135m-instruct")
    p.add_argument("--embed-model", default="all-minilm-l6-v2")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--ttft-requests", type=int, default=20)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", required=True)

    p = sub.add_parser("summary")
    p.add_argument("--work", required=True)
    p.add_argument("--prompts", required=True)

    args = parser.parse_args()
    {"prompts": cmd_prompts, "sentences": cmd_sentences, "llamacpp": cmd_llamacpp, "st": cmd_st,
     "pasarela": cmd_pasarela, "summary": cmd_summary}[args.command](args)


if __name__ == "__main__":
    main()
