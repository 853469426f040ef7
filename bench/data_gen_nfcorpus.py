"""Bench: LLM-free triplet generation + BM25 hard negatives over NFCorpus's corpus (documents only).

Never reads NFCorpus's queries or qrels: only ``corpus.jsonl`` (``load_notes`` on a BEIR folder).
Writes the inverse-cloze triplets to the stable path the trainers use (``runs/nfcorpus-triplets``),
the independent-cropping ones next to it, and the counts, filter rates and throughput to
``bench/results/data_gen_nfcorpus.{md,json}``.

Run (from the repo root)::

    python bench/data_gen_nfcorpus.py [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colmed.data_gen.config import GenerateConfig  # noqa: E402
from colmed.data_gen.pipeline import TripletPipeline  # noqa: E402

NFCORPUS = ROOT.parent / "shared" / "beir" / "nfcorpus"
RUNS = {
    "inverse_cloze": ROOT / "runs" / "nfcorpus-triplets",
    "cropping": ROOT / "runs" / "nfcorpus-triplets-cropping",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    for generator, out in RUNS.items():
        cfg = GenerateConfig(notes=str(NFCORPUS), out=str(out), generator=generator, queries_per_note=1,
                             miner="bm25", num_negatives=5, range_max=50, relative_margin=0.05,
                             dev_fraction=0.05, seed=13, overwrite=args.overwrite, progress=False)
        t0 = time.perf_counter()
        if out.exists() and not args.overwrite:
            manifest = json.loads((out / "manifest.json").read_text())
            wall = None
        else:
            manifest = TripletPipeline(cfg).run()
            wall = round(time.perf_counter() - t0, 2)
        c, m = manifest["counts"], manifest["counts"]["mining"]
        generated = c["generation"]["generated"]
        results[generator] = {
            "output": str(out.relative_to(ROOT)),
            "notes": c["notes"], "passages": c["passages"]["corpus"],
            "queries_generated": generated,
            "filters": c["filters"],
            "filter_rates": {k: round(v / generated, 4) for k, v in c["filters"].items()} if generated else {},
            "generator_skips": c["generation"].get("generator", {}),
            "records": c["records"],
            "mining": {k: m[k] for k in ("queries_with_all_negatives", "queries_without_negatives", "negatives_total")},
            "mining_removed": m.get("removed", {}),
            "relative_margin_rate": round(m["removed"].get("relative_margin", 0) / max(1, m["removed"]["candidates"]), 4),
            "throughput": manifest["throughput"], "wall_seconds": wall, "exports": manifest["exports"],
        }
    meta = {"command": "python bench/data_gen_nfcorpus.py --overwrite", "date": "2026-11-25",
            "machine": f"2-core CPU (shared), no GPU, {platform.platform()}, Python {platform.python_version()}",
            "source": "../shared/beir/nfcorpus/corpus.jsonl only (no queries, no qrels)",
            "settings": "1 query per passage (chunks of <=200 words), BM25 (bm25s) negatives: 5 per query from ranks "
                        "[0,50), relative_margin 0.05, same-note passages excluded, dev fraction 0.05 by note, seed 13",
            "results": results}
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "data_gen_nfcorpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / "data_gen_nfcorpus.md").write_text(render(meta))
    print(render(meta))


def render(meta: dict) -> str:
    lines = ["# data_gen on NFCorpus (LLM-free generators + BM25 hard negatives)", "",
             f"- Command: `{meta['command']}`", f"- Date: {meta['date']}", f"- Machine: {meta['machine']}",
             f"- Source: {meta['source']}", f"- Settings: {meta['settings']}", "",
             "| generator | notes | passages | queries | kept triplets (train/dev) | dedup drop | "
             "rel.-margin drop (of candidates) | same-note drop | full 5 negatives | gen notes/s | mining q/s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g, r in meta["results"].items():
        t = r["throughput"]
        lines.append(
            f"| {g} | {r['notes']['sampled']} | {r['passages']} | {r['queries_generated']} | "
            f"{r['records']['total']} ({r['records']['train']}/{r['records']['dev']}) | "
            f"{r['filters'].get('duplicate', 0)} ({100 * r['filter_rates'].get('duplicate', 0):.2f}%) | "
            f"{r['mining_removed'].get('relative_margin', 0)} ({100 * r['relative_margin_rate']:.2f}%) | "
            f"{r['mining_removed'].get('same_note', 0)} | {r['mining']['queries_with_all_negatives']} | "
            f"{t['notes_per_second']} | {t['queries_per_second_mining']} | {r['wall_seconds']} |")
    lines += ["", "Outputs (git-ignored): " + ", ".join(f"`{r['output']}/`" for r in meta["results"].values()),
              "", "Per-generator details (passages skipped by the generator, per-filter counts, seconds per stage) "
              "are in `data_gen_nfcorpus.json` and each output's `manifest.json`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
