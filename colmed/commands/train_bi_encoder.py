"""``colmed train bi-encoder``: fine-tune a sentence-transformers model on colmed triplets.

Example:
    colmed train bi-encoder --triplets runs/nfcorpus-triplets --base sentence-transformers/all-MiniLM-L6-v2 \\
        --out runs/minilm-nfcorpus --preset medembed --epochs 1

Settings come from the dataclass defaults, then ``--preset``, then ``--config cfg.yaml``, then explicit
flags. Multi-GPU: ``torchrun --nproc_per_node 4 -m colmed.cli train bi-encoder ...`` (same flags).
"""

from __future__ import annotations

from pathlib import Path

import click

from colmed.commands.train_options import old_spelling, resolve_old_spellings

OLD_SPELLINGS = {"lr": "learning_rate", "query_max_length": "max_query_length",
                 "passage_max_length": "max_doc_length"}


@click.command(name="bi-encoder")
@click.option("--triplets", default=None, help="triplets.jsonl or a folder holding it (data_gen TripletRecord lines).")
@click.option("--base", "base_model", default=None,
              help="Model to start from: hub name or local sentence-transformers/HF folder.")
@click.option("--out", default=None, type=click.Path(), help="Model folder to write (refused if it exists).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML file of settings (keys = the long flag names with underscores).")
@click.option("--preset", default=None, help="Named recipe from bi_encoder/presets (e.g. medembed).")
@click.option("--epochs", type=float, default=None, help="Training epochs [1].")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps (overrides epochs) [-1].")
@click.option("--batch-size", type=int, default=None, help="Queries per batch (per device) [32].")
@click.option("--learning-rate", type=float, default=None, help="Peak learning rate [2e-5].")
@click.option("--warmup-ratio", type=float, default=None, help="Fraction of steps of linear warmup [0.1].")
@click.option("--temperature", type=float, default=None, help="InfoNCE temperature; scale = 1/temperature [0.05].")
@click.option("--loss", type=click.Choice(["mnrl", "cached_mnrl"]), default=None,
              help="mnrl, or cached_mnrl (GradCache) for big batches on small GPUs [mnrl].")
@click.option("--mini-batch-size", type=int, default=None, help="cached_mnrl: sub-batch size [32].")
@click.option("--num-negatives", type=int, default=None, help="Mined hard negatives per query (0 = in-batch only) [1].")
@click.option("--matryoshka-dims", default=None, help="Comma-separated Matryoshka dims, e.g. 384,256,128,64.")
@click.option("--max-query-length", type=int, default=None, help="Query tokens [128].")
@click.option("--max-doc-length", type=int, default=None, help="Document (passage) tokens [256].")
@click.option("--query-prompt", default=None, help="Query prompt (default: the base model's own, else none).")
@click.option("--document-prompt", default=None, help="Document prompt (default: the base model's own, else none).")
@click.option("--seed", type=int, default=None, help="Random seed [42].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="auto = bf16/fp16 on GPU, fp32 on CPU [auto].")
@click.option("--dev", default=None,
              help="'triplets' (dev split of the triplets), a BEIR folder/hub name, or 'none' [triplets].")
@click.option("--dev-split", default=None, help="BEIR split for --dev [dev].")
@click.option("--dev-max-queries", type=int, default=None, help="Cap on dev queries [500].")
@click.option("--dev-max-docs", type=int, default=None,
              help="Cap on dev corpus size (judged docs are always kept) [all].")
@click.option("--eval-steps", type=int, default=None, help="Evaluate and checkpoint every N steps (0 = per epoch) [0].")
@click.option("--max-train-samples", type=int, default=None, help="Train on a random subset of this size.")
@click.option("--checkpoint-dir", default=None, help="Where resumable checkpoints go [<out>.checkpoints].")
@click.option("--keep-checkpoints", is_flag=True, default=None, help="Keep checkpoints after success.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint of an interrupted run.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out and discard old checkpoints.")
@old_spelling("--lr", float)
@old_spelling("--query-max-length", int)
@old_spelling("--passage-max-length", int)
def command(triplets, base_model, out, config_path, preset, resume, overwrite, matryoshka_dims, dev, **flags):
    """Fine-tune a bi-encoder with MultipleNegativesRankingLoss; keep the best dev checkpoint."""
    from colmed.commands._common import quiet_libraries
    from colmed.core.errors import InputError

    quiet_libraries()
    from colmed.bi_encoder.config import BiEncoderTrainingConfig

    overrides = dict(resolve_old_spellings(flags, OLD_SPELLINGS), triplets=triplets, base_model=base_model, out=out,
                     preset=preset)
    if matryoshka_dims:
        try:
            overrides["matryoshka_dims"] = [int(d) for d in matryoshka_dims.split(",") if d.strip()]
        except ValueError:
            raise InputError(f"expected comma-separated integers, got {matryoshka_dims!r}",
                             field="matryoshka_dims") from None
    if dev is not None:
        overrides["dev"] = None if dev.lower() == "none" else dev
    given = {k: v for k, v in overrides.items() if v is not None or (k == "dev" and dev is not None)}
    if config_path:
        config = BiEncoderTrainingConfig.from_yaml(config_path, given)
    else:
        config = BiEncoderTrainingConfig.from_dict(given)
    for name in ("triplets", "out"):
        if not getattr(config, name):
            raise InputError(f"--{name} is required (flag or config file)", field=name)

    from colmed.bi_encoder.train import train_bi_encoder

    result = train_bi_encoder(config, resume=resume, overwrite=overwrite)
    if not result.model_written:  # not the main process of a multi-process run
        return
    base = result.base_dev_metrics.get("dev_ndcg@10")
    best = result.best_dev_metric
    dev_line = (f"dev ndcg@10 base {base:.4f} -> best {best:.4f}" if base is not None and best is not None
                else "no dev evaluation")
    click.echo(f"wrote {result.model_dir} ({result.global_steps} steps, {result.train_seconds:.0f}s, "
               f"{result.data_stats.get('train_rows', 0)} training rows; {dev_line})")
