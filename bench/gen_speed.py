"""LLM query generation on CPU: the transformers backend against llama.cpp on the same GGUF, notes and template.

Each variant runs in its own worker process (loaded once; llama.cpp's OpenMP settings are per process) and the
passages are sent to the workers in turn, the order rotating every passage, so a busy shared machine slows every
variant alike. Per variant: seconds per passage (and per note, at MTSamples' mean passages per note), prompt and
completion tokens, tokens/s (llama.cpp: prompt evaluation and decoding apart, from its perf counters; how many
prompt tokens it evaluated after prefix reuse), and acceptance: passages whose reply parsed (after the pipeline's
retry), queries kept by the pipeline's filters (length, relevance >= 3) and by the round-trip filter (BM25 finds
the source passage in its top 10 among the passages of 200 notes).

    bash ../shared/models/get-qwen-0.5b-gguf.sh /work/models/qwen
    python bench/gen_speed.py --gguf /work/models/qwen/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --passages 6

Variants: ``transformers`` (GGUF de-quantised to torch fp32, prefilled reply, ``--threads`` torch threads),
``llamacpp`` (the backend's defaults with ``--threads``: OpenMP threads sleep when idle, JSON-schema grammar),
``llamacpp-1thread`` (one thread), ``llamacpp-passage-first`` (the lean template as it was before the passage
moved last: prefix reuse covers only the system prompt). ``llamacpp-spin`` (libgomp's default spinning, set by
GOMP_SPINCOUNT=300000) can be added with ``--variants``; on a busy machine it is several times slower.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("transformers", "llamacpp", "llamacpp-1thread", "llamacpp-passage-first")

# medembed-lean's user message before the passage moved last (git history of data_gen/prompts/medembed-lean.yaml)
PASSAGE_FIRST_USER = """Clinical text:
<<<
{passage}
>>>

Write {num_queries} search queries that this text answers, one of each of these types:
{query_types}

For each query give "type" (the query type), "query" (the query itself, in your own words) and
"relevance" (how well the text answers it, an integer from 1 (barely) to 5 (fully)).

Reply with this JSON and nothing else:
{"queries": [{"type": "...", "query": "...", "relevance": 5}]}
"""


# ------------------------------------------------------------------ worker: one backend, passages from stdin

def worker(variant: str, gguf: str, threads: int, queries: int, max_new_tokens: int) -> None:
    from colmed.data_gen.generators.llm import LLMQueryGenerator
    from colmed.data_gen.notes import Passage
    from colmed.data_gen.prompts import load_prompt_template

    template = load_prompt_template("medembed-lean")
    if variant == "llamacpp-passage-first":
        template = dataclasses.replace(template, user=PASSAGE_FIRST_USER)
    t0 = time.perf_counter()
    if variant == "transformers":
        import torch

        from colmed.data_gen.backends.transformers_backend import TransformersBackend

        torch.set_num_threads(threads)
        backend = TransformersBackend(str(Path(gguf).parent), gguf_file=Path(gguf).name, device="cpu")
    else:
        from colmed.data_gen.backends.llamacpp_backend import LlamaCppBackend

        backend = LlamaCppBackend(gguf, n_threads=1 if variant == "llamacpp-1thread" else threads)
    load_seconds = time.perf_counter() - t0
    generator = LLMQueryGenerator(backend, template, queries, max_retries=1, max_new_tokens=max_new_tokens,
                                  temperature=0.7, seed=13)
    print(json.dumps({"ready": round(load_seconds, 2),
                      "extra_buffer_types": getattr(backend, "extra_buffer_types", None)}), flush=True)
    for line in sys.stdin:
        p = json.loads(line)
        passage = Passage(p["passage_id"], p["note_id"], p["text"])
        perf = None
        if variant != "transformers":
            import llama_cpp

            llama_cpp.llama_perf_context_reset(backend.llm.ctx)
        t0 = time.perf_counter()
        result = generator.generate([passage])
        seconds = time.perf_counter() - t0
        if variant != "transformers":
            d = llama_cpp.llama_perf_context(backend.llm.ctx)
            perf = {"prompt_eval_ms": d.t_p_eval_ms, "prompt_eval_tokens": d.n_p_eval, "decode_ms": d.t_eval_ms,
                    "decode_tokens": d.n_eval}
        else:  # prefill alone, timed apart (not in ``seconds``): splits transformers' time like llama.cpp's counters
            import torch

            text = backend.render(template.messages(passage.full_text, generator.types_for(passage)),
                                  template.assistant_prefix)
            enc = backend.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            t1 = time.perf_counter()
            with torch.inference_mode():
                backend.model(**enc)
            perf = {"prefill_ms": (time.perf_counter() - t1) * 1000, "prefill_tokens": int(enc["input_ids"].shape[1])}
        print(json.dumps({"seconds": seconds, "prompt_tokens": result.prompt_tokens,
                          "completion_tokens": result.completion_tokens, "retries": result.counts.get("retries", 0),
                          "rejected": len(result.rejects), "perf": perf,
                          "queries": [{"query": q.query, "relevance": q.relevance, "type": q.query_type}
                                      for q in result.queries]}), flush=True)


# ------------------------------------------------------------------ driver

def passages_and_corpus(notes_path: str, n: int, corpus_notes: int, seed: int = 13):
    from colmed.data_gen.notes import chunk_note, load_notes, sample_notes

    notes, _ = load_notes(notes_path)
    picked = sample_notes(notes, n, seed)
    passages = [chunk_note(note)[0] for note in picked]
    corpus = {p.passage_id: p for note in sample_notes(notes, corpus_notes, seed) for p in chunk_note(note)}
    corpus.update({p.passage_id: p for p in passages})
    per_note = statistics.mean(len(chunk_note(note)) for note in notes)
    return passages, corpus, per_note


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def summarise(rows: dict[str, list[dict]], ready: dict, queries: int, per_note: float) -> dict:
    summary = {}
    for v, rs in rows.items():
        if not rs:
            continue
        secs = [r["seconds"] for r in rs]
        prompt, completion = sum(r["prompt_tokens"] for r in rs), sum(r["completion_tokens"] for r in rs)
        qs = [q for r in rs for q in r["queries"]]
        asked = len(rs) * queries
        s = {"passages": len(rs), "load_seconds": ready[v]["ready"], "seconds_per_passage": statistics.mean(secs),
             "median_seconds_per_passage": statistics.median(secs),
             "seconds_per_note": statistics.mean(secs) * per_note, "passages_per_second": len(rs) / sum(secs),
             "prompt_tokens_per_passage": prompt / len(rs), "completion_tokens_per_passage": completion / len(rs),
             "retries": sum(r["retries"] for r in rs), "passages_parsed": sum(1 for r in rs if r["queries"]) / len(rs),
             "queries": len(qs), "queries_requested": asked,
             "queries_pass_filters": sum(q["filter"] is None for q in qs) / asked,
             "queries_pass_filters_and_round_trip": sum(q["filter"] is None and q["round_trip"] for q in qs) / asked}
        perf = [r["perf"] for r in rs]
        if v == "transformers":
            s["prefill_tokens_per_second"] = (sum(x["prefill_tokens"] for x in perf)
                                              / sum(x["prefill_ms"] for x in perf) * 1000)
            s["decode_tokens_per_second_est"] = completion / (sum(secs) - sum(x["prefill_ms"] for x in perf) / 1000)
        else:
            s["extra_buffer_types"] = ready[v].get("extra_buffer_types")
            s["prompt_eval_tokens_per_passage"] = sum(x["prompt_eval_tokens"] for x in perf) / len(rs)
            s["prompt_eval_tokens_per_second"] = (sum(x["prompt_eval_tokens"] for x in perf)
                                                  / sum(x["prompt_eval_ms"] for x in perf) * 1000)
            s["decode_tokens_per_second"] = (sum(x["decode_tokens"] for x in perf)
                                             / sum(x["decode_ms"] for x in perf) * 1000)
        summary[v] = s
    base = summary.get("transformers")
    if base:
        common = {r["passage_id"] for r in rows["transformers"]}
        for v, s in summary.items():  # on the passages both finished
            t = sum(r["seconds"] for r in rows["transformers"] if r["passage_id"] in common)
            o = sum(r["seconds"] for r in rows[v] if r["passage_id"] in common)
            s["speedup_vs_transformers"] = t / o if o else None
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default="/work/models/qwen/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    ap.add_argument("--notes", default=str(ROOT.parent / "shared" / "notes" / "mtsamples.jsonl"))
    ap.add_argument("--passages", type=int, default=6)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=3, help="queries per passage (the reference study's setting)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gen_speed.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.gguf, args.threads, args.queries, args.max_new_tokens)
        return

    from colmed.data_gen.filters import QueryFilter
    from colmed.indexes.bm25 import BM25Index

    variants = args.variants.split(",")
    passages, corpus, per_note = passages_and_corpus(args.notes, args.passages, 200)
    bm25 = BM25Index.build(list(corpus), [p.full_text for p in corpus.values()])
    keep = QueryFilter(min_relevance=3.0, require_evidence_in_note=False)
    workers, ready = {}, {}
    for v in variants:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if v == "llamacpp-spin":
            env["GOMP_SPINCOUNT"] = "300000"
        workers[v] = subprocess.Popen(
            [sys.executable, __file__, "--worker", v, "--gguf", args.gguf, "--threads", str(args.threads),
             "--queries", str(args.queries), "--max-new-tokens", str(args.max_new_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for v in variants:  # loads overlap; each worker's own load time is what it reports
        ready[v] = json.loads(workers[v].stdout.readline())
        print(f"{v}: loaded in {ready[v]['ready']} s", file=sys.stderr, flush=True)
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    started = time.time()
    for i, p in enumerate(passages):
        for v in variants[i % len(variants):] + variants[:i % len(variants)]:
            workers[v].stdin.write(json.dumps({"passage_id": p.passage_id, "note_id": p.note_id,
                                               "text": p.full_text}) + "\n")
            workers[v].stdin.flush()
            r = json.loads(workers[v].stdout.readline())
            for q in r["queries"]:
                q["filter"] = keep.reason(q["query"], p.full_text, "", q["relevance"])
                top = bm25.search({"q": q["query"]}, k=10).get("q", {})
                q["round_trip"] = p.passage_id in top
            rows[v].append({"passage_id": p.passage_id, **r})
            print(f"passage {i} {v}: {r['seconds']:.1f} s, {len(r['queries'])} queries", file=sys.stderr, flush=True)
        # written after every passage: a run cut short keeps what it measured
        out = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "machine": os.uname().nodename,
               "cores": os.cpu_count(), "loadavg": os.getloadavg(), "llama_cpp_version": _version("llama-cpp-python"),
               "passages_done": i + 1, "passages": [q.passage_id for q in passages[:i + 1]],
               "mean_passages_per_note": per_note, "wall_seconds": time.time() - started,
               "summary": summarise(rows, ready, args.queries, per_note), "rows": rows}
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for w in workers.values():
        w.stdin.close()
        w.wait(timeout=60)
    summary = out["summary"]
    cols = ["seconds_per_passage", "seconds_per_note", "speedup_vs_transformers", "prompt_tokens_per_passage",
            "completion_tokens_per_passage", "passages_parsed", "queries_pass_filters",
            "queries_pass_filters_and_round_trip"]
    print("| variant | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for v, s in summary.items():
        print(f"| {v} | " + " | ".join(f"{s.get(c, float('nan')):.2f}" for c in cols) + " |")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
