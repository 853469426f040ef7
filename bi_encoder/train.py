"""Fine-tune a sentence-transformers bi-encoder on colmed triplets, the MedEmbed way.

The loop is sentence-transformers' own :class:`~sentence_transformers.SentenceTransformerTrainer`:
:class:`~sentence_transformers.losses.MultipleNegativesRankingLoss` (in-batch + mined hard negatives,
``scale = 1/temperature``) or its GradCache variant
:class:`~sentence_transformers.losses.CachedMultipleNegativesRankingLoss` for large effective batches on
small GPUs, optionally wrapped in :class:`~sentence_transformers.losses.MatryoshkaLoss`; a no-duplicates
batch sampler (a duplicate text in a batch would be a false in-batch negative); query/document prompts
through the training arguments; dev nDCG@10 via ranx at every evaluation with the best checkpoint kept.

On disk::

    <out>/                   finished model only: SentenceTransformer(<out>) loads it; README.md model card;
                             manifest.json (config, data hashes, versions, git sha, metrics, timings)
    <out>.checkpoints/       resumable trainer checkpoints (removed after success unless keep_checkpoints)

One writer per ``out`` (its :func:`~colmed.core.io.output_lock`) for the whole run, checkpoints included. A
run killed at any point resumes with ``--resume`` from its newest *complete* checkpoint (one the trainer
finished writing; a half-written one is removed) and, on CPU, finishes with the same model bytes as an
uninterrupted run (``tests/test_train_kill.py``).

Multi-GPU: run the same command under torchrun, e.g.
``torchrun --nproc_per_node 4 -m colmed.cli train bi-encoder --triplets T --base B --out O``: one process per
GPU (NCCL; gloo without GPUs), ``batch_size`` queries per process and step, the loss gathering every process's
positives and negatives so in-batch negatives span all GPUs, and the main process alone writing checkpoints
and the model (its manifest records ``world_size`` and the gather). ``tests/test_torchrun.py`` runs it on CPU.

Example (not run as a doctest: training takes minutes and the base model is a hub download;
``tests/test_bi_encoder_train.py`` trains a tiny model end to end):
    >>> from colmed.bi_encoder.config import BiEncoderTrainingConfig
    >>> cfg = BiEncoderTrainingConfig(base_model="sentence-transformers/all-MiniLM-L6-v2",
    ...                               triplets="runs/nfcorpus-triplets", out="runs/minilm-nfcorpus")
    >>> result = train_bi_encoder(cfg)                                  # doctest: +SKIP
    >>> result.best_dev_metric, result.base_dev_metrics["dev_ndcg@10"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmed.bi_encoder.config import BiEncoderTrainingConfig
from colmed.bi_encoder.data import TripletTrainingData, truncate_to_tokens
from colmed.core.errors import IndexExistsError, InputError
from colmed.core.io import atomic_directory, check_output, output_lock, write_json

logger = logging.getLogger(__name__)

CONFIG_NAME = "colmed_train_config.json"
# Fields that may change between a run and its resumption without changing what is being trained.
RESUMABLE_CHANGES = {"epochs", "max_steps", "eval_steps", "logging_steps", "save_total_limit",
                     "dataloader_workers", "keep_checkpoints", "out", "checkpoint_dir"}


@dataclass
class TrainingResult:
    """What a finished run produced: the model directory and its measured numbers."""

    model_dir: Path
    base_dev_metrics: dict[str, float]
    best_dev_metric: float | None
    best_checkpoint: str | None
    train_seconds: float
    global_steps: int
    data_stats: dict[str, int] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None  # the checkpoint an interrupted run continued from (its folder name)
    model_written: bool = False  # False on the other processes of a multi-process run: the main one writes


def train_bi_encoder(config: BiEncoderTrainingConfig, resume: bool = False, overwrite: bool = False,
                     callbacks: list | None = None) -> TrainingResult:
    """Run one fine-tuning job described by ``config``; see the module docstring for the layout.

    ``resume`` continues from the newest checkpoint in ``config.checkpoints_path``; ``overwrite`` replaces
    a finished ``config.out`` and discards old checkpoints. Without either, existing outputs are refused.
    ``callbacks`` are extra :class:`transformers.TrainerCallback` objects handed to the trainer.
    """
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

    from colmed.bi_encoder.prompts import resolve_prompts

    if not config.triplets:
        raise InputError("no triplets given", field="triplets")
    if not config.out:
        raise InputError("no output directory given", field="out")
    # Refused before minutes of loading; inputs read before anything is written (open_run below takes the lock
    # and prepares the checkpoints), so a bad argument leaves nothing behind.
    check_output(config.out, overwrite, kind="model", inputs=run_inputs(config))
    data = TripletTrainingData.from_path(config.triplets, num_negatives=config.num_negatives,
                                         max_train_samples=config.max_train_samples, seed=config.seed)
    logger.info("training rows: %d; data: %s", len(data.train), data.stats)

    try:
        model = SentenceTransformer(config.base_model)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load base model ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                         path=config.base_model, field="base_model") from None
    query_prompt, document_prompt = resolve_prompts(config.base_model, config.query_prompt,
                                                    config.document_prompt)
    # Stored in the saved config_sentence_transformers.json: DenseEncoder and encode_query/encode_document
    # then use exactly the prompts the model was trained with.
    model.prompts = {**model.prompts, "query": query_prompt, "document": document_prompt}
    # Training may cut passages shorter than the model reads them at inference (cheaper steps); the saved
    # model keeps the base model's own limit so indexing encodes documents exactly as the base did.
    inference_max_seq_length = model.max_seq_length
    model.max_seq_length = config.max_doc_length
    model.model_card_data.local_files_only = True  # no hub look-ups while writing the card
    model.model_card_data.train_datasets = [{"name": f"colmed triplets ({Path(config.triplets).name})"}]

    train = data.train
    if config.max_query_length < config.max_doc_length:
        train = train.map(lambda batch: {"anchor": truncate_to_tokens(batch["anchor"], model.tokenizer,
                                                                      config.max_query_length)},
                          batched=True, desc="truncating queries")

    loss = _build_loss(model, config)
    evaluator, dev_name = _build_evaluator(config, data, query_prompt, document_prompt)
    precision = _resolve_precision(config.precision, torch)
    column_prompts = {c: (query_prompt if c == "anchor" else document_prompt) for c in train.column_names}
    best_metric = f"eval_{dev_name}_{evaluator.metrics[0]}" if evaluator is not None else None
    with open_run(config, resume=resume, overwrite=overwrite) as (out, ckpt_dir, last_checkpoint):
        base_dev = _record_start(config, ckpt_dir, model, evaluator, resuming=last_checkpoint is not None)

        args = training_arguments(config, ckpt_dir, num_rows=len(train), precision=precision,
                                  prompts=column_prompts if any(column_prompts.values()) else None,
                                  best_metric=best_metric)
        if last_checkpoint is not None:
            callbacks = [*(callbacks or []), model_card_restorer(evaluator, base_dev)]
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                             evaluator=evaluator, callbacks=callbacks)
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)
        train_seconds = time.perf_counter() - started

        result = TrainingResult(
            model_dir=out, base_dev_metrics=base_dev,
            best_dev_metric=trainer.state.best_metric, best_checkpoint=trainer.state.best_model_checkpoint,
            train_seconds=train_seconds, global_steps=trainer.state.global_step, data_stats=data.stats,
            log_history=list(trainer.state.log_history), resumed_from=last_checkpoint.name if last_checkpoint else None)
        base_primary = result.base_dev_metrics.get(f"dev_{evaluator.metrics[0]}") if evaluator is not None else None
        if base_primary is not None and result.best_dev_metric is not None and result.best_dev_metric < base_primary:
            # Checkpoint selection only sees fine-tuned checkpoints; say plainly when none beat the start.
            logger.warning("no checkpoint beat the base model on dev (%s %.4f < base %.4f); saving the best "
                           "fine-tuned one anyway", evaluator.metrics[0], result.best_dev_metric, base_primary)
        model.max_seq_length = inference_max_seq_length
        if trainer.is_world_process_zero():
            _save_model(model, config, data, result, precision, overwrite=overwrite,
                        dev_source=_dev_description(config, data), gathered=gathers_across_processes(loss))
            result.model_written = True
            if not config.keep_checkpoints:
                discard_checkpoints(ckpt_dir)
    return result


def training_arguments(config: BiEncoderTrainingConfig, output_dir: Path, num_rows: int, precision: str = "fp32",
                       prompts: dict[str, str] | None = None, best_metric: str | None = None,
                       arguments_class: type | None = None, **extra: Any):
    """colmed's trainer vocabulary mapped onto sentence-transformers' ``TrainingArguments``.

    ``best_metric`` (the logged dev metric) turns on evaluation, checkpointing and keeping the best
    checkpoint every ``eval_steps`` (0: once per epoch of ``num_rows`` training rows).
    ``arguments_class`` is the model family's arguments class (default: the bi-encoder's; the ColBERT
    trainer passes ``MultiVectorEncoderTrainingArguments``), ``extra`` its own fields; ``config`` may be
    any config with the shared hyperparameter names.

    Example:
        >>> from colmed.bi_encoder.config import BiEncoderTrainingConfig
        >>> cfg = BiEncoderTrainingConfig(batch_size=8, learning_rate=1e-4, warmup_ratio=0.25, max_steps=40)
        >>> args = training_arguments(cfg, Path("runs/unused"), num_rows=100)
        >>> args.get_warmup_steps(40), args.per_device_train_batch_size, args.learning_rate
        (10, 8, 0.0001)
    """
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    import torch

    steps_per_epoch = max(1, num_rows // _world_size() // config.batch_size)
    eval_every = config.eval_steps or steps_per_epoch
    # Pinned memory only speeds copies to a GPU; on CPU torch warns on every dataloader it is asked for.
    extra.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    if _world_size() > 1 and not torch.cuda.is_available():
        # Under torchrun without GPUs transformers sets up DDP (gloo) only when told the run is on CPU; otherwise
        # every process trains its own copy on all the data and only the loss's all-gather is shared.
        extra.setdefault("use_cpu", True)
    return (arguments_class or SentenceTransformerTrainingArguments)(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        **_warmup_argument(config.warmup_ratio),
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=prompts,
        eval_strategy="steps" if best_metric else "no",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=eval_every,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=best_metric is not None,
        metric_for_best_model=best_metric,
        greater_is_better=True,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",
        dataloader_num_workers=config.dataloader_workers,
        # Checkpoints often hold weights the loss never reaches (a BERT pooler under mean pooling); DDP must
        # look for them each step or it waits for their gradients and fails.
        ddp_find_unused_parameters=True,
        **extra,
    )


def _warmup_argument(ratio: float) -> dict[str, float]:
    """``warmup_ratio`` in the spelling the installed transformers reads as a fraction of all steps.

    transformers 5 takes the ratio as a float ``warmup_steps`` (``warmup_ratio`` is deprecated there);
    transformers 4 reads a float ``warmup_steps`` as that many steps (0.1: no warmup at all) and needs
    ``warmup_ratio``.
    """
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": ratio}
    return {"warmup_ratio": ratio}


def _prepare_checkpoint_dir(ckpt_dir: Path, config: BiEncoderTrainingConfig, resume: bool,
                            overwrite: bool) -> Path | None:
    """Decide where training starts: fresh, or the newest complete checkpoint of the same configuration.

    Checkpoints a kill interrupted while the trainer was writing them are removed first: they cannot be
    resumed from, and a fresh run would otherwise save into their half-written folders.
    """
    complete, incomplete = checkpoints(ckpt_dir)
    if incomplete and _is_main_process():
        logger.warning("%s: removing %s, left half-written by an interrupted run", ckpt_dir,
                       ", ".join(c.name for c in incomplete))
        for child in incomplete:
            shutil.rmtree(child)
    existing = complete[-1] if complete else None
    if existing and not resume and not overwrite:
        raise IndexExistsError(f"{ckpt_dir}: holds checkpoints of an earlier run; pass --resume to continue "
                               f"it or --overwrite to start over")
    if overwrite and not resume and ckpt_dir.is_dir():
        if _is_main_process():
            for child in ckpt_dir.glob("checkpoint-*"):
                shutil.rmtree(child)
        existing = None
    saved = ckpt_dir / CONFIG_NAME
    if existing and saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))["config"]
        changed = sorted(k for k, v in config.to_dict().items()
                         if k not in RESUMABLE_CHANGES and before.get(k) != v)
        if changed:
            raise InputError(f"cannot resume with changed settings ({', '.join(changed)}); "
                             f"use the original settings or --overwrite", path=saved, field=changed[0])
    if resume and not existing:
        logger.warning("%s: no checkpoint to resume from; starting from the base model", ckpt_dir)
    elif existing:
        logger.warning("resuming from %s (step %d): the steps before it are not trained again", existing,
                       _checkpoint_step(existing))
    return existing


def checkpoints(ckpt_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """The trainer's ``checkpoint-<step>`` folders in ``ckpt_dir``, by step: ``(complete, incomplete)``.

    A checkpoint is complete once its ``trainer_state.json`` reads back: the trainer writes it after the
    weights, optimizer, scheduler and RNG states, and it is what a resume starts from.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for step, state in ((2, '{"global_step": 2}'), (10, '{"global_step": 10}'), (12, '{"glo')):
        ...     (d / f"checkpoint-{step}").mkdir()
        ...     _ = (d / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
        >>> [[c.name for c in group] for group in checkpoints(d)]
        [['checkpoint-2', 'checkpoint-10'], ['checkpoint-12']]
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return [], []
    found = sorted((c for c in ckpt_dir.iterdir() if c.is_dir() and re.fullmatch(r"checkpoint-\d+", c.name)),
                   key=_checkpoint_step)
    complete, incomplete = [], []
    for c in found:
        try:
            json.loads((c / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
            complete.append(c)
        except (OSError, ValueError, KeyError, TypeError):
            incomplete.append(c)
    return complete, incomplete


def _checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def discard_checkpoints(ckpt_dir: Path) -> None:
    """Remove a finished run's checkpoints folder: renamed first (``.<name>.<pid>.discarded``), so a kill
    during the removal leaves a name the next run writing this model recognises and removes
    (:func:`open_run`), never a half-deleted folder that looks like checkpoints."""
    if not ckpt_dir.is_dir():
        return
    doomed = ckpt_dir.with_name(f".{ckpt_dir.name}.{os.getpid()}.discarded")
    os.replace(ckpt_dir, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_discarded(ckpt_dir: Path) -> None:
    pattern = re.compile(rf"^\.{re.escape(ckpt_dir.name)}\.\d+\.discarded$")
    if ckpt_dir.parent.is_dir():
        for p in ckpt_dir.parent.iterdir():
            if pattern.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)


def _build_loss(model, config: BiEncoderTrainingConfig):
    from sentence_transformers import losses

    # Under torchrun each process's queries are scored against every process's positives and negatives, so
    # the in-batch negatives grow with the number of GPUs as they would with one GPU holding the global batch.
    gather = _world_size() > 1
    if config.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=config.scale,
                                                         mini_batch_size=config.mini_batch_size,
                                                         gather_across_devices=gather)
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=config.scale, gather_across_devices=gather)
    if config.matryoshka_dims:
        dims = [d for d in config.matryoshka_dims if d <= model.get_embedding_dimension()]
        if not dims:
            raise InputError(f"no Matryoshka dimension fits the model's {model.get_embedding_dimension()} dims",
                             field="matryoshka_dims")
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    return loss


def _build_evaluator(config: BiEncoderTrainingConfig, data: TripletTrainingData, query_prompt: str,
                     document_prompt: str):
    from colmed.bi_encoder.dev_eval import DenseRetrievalEvaluator

    if not config.dev:
        return None, ""
    if config.dev == "triplets":
        dev = data.dev
        if dev is None:
            logger.warning("no dev-split triplets: training without dev evaluation (last step is kept)")
            return None, ""
    else:
        from colmed.data.datasets import load_dataset
        dev = load_dataset(config.dev, split=config.dev_split)
    if config.dev_max_queries or config.dev_max_docs:
        dev = dev.subset(max_queries=config.dev_max_queries, max_docs=config.dev_max_docs)
    return DenseRetrievalEvaluator(dev, query_prompt, document_prompt, name="dev", batch_size=config.batch_size,
                                   show_progress_bar=True), "dev"


def _dev_description(config: BiEncoderTrainingConfig, data: TripletTrainingData) -> dict[str, Any]:
    if config.dev == "triplets":
        return {"source": "dev split of the triplets", "queries": data.stats.get("dev_queries", 0),
                "documents": data.stats.get("dev_docs", 0), "max_queries": config.dev_max_queries}
    return {"source": config.dev, "split": config.dev_split, "max_queries": config.dev_max_queries,
            "max_docs": config.dev_max_docs}


def run_inputs(config) -> list[str | None]:
    """What a training run reads, which its ``out`` must neither be, contain nor sit inside."""
    local = [config.base_model, None if config.dev in (None, "triplets") else config.dev]
    return [config.triplets, *(p if p and Path(p).exists() else None for p in local)]


@contextlib.contextmanager
def open_run(config, resume: bool, overwrite: bool):
    """Check the output folder (before hours of training, not after), take its writer lock for the whole run
    and prepare the checkpoints folder; yields ``(out, checkpoints folder, checkpoint to resume from or None)``.

    Only the main process of a multi-process run takes the lock: it alone writes the model and checkpoints.
    A killed writer's temp folders (of ``out``, and a discarded checkpoints folder) are removed here.
    """
    out = Path(config.out)
    check_output(out, overwrite, kind="model", inputs=run_inputs(config))  # a refusal writes nothing, no lock
    with output_lock(out) if _is_main_process() else contextlib.nullcontext(out):
        check_output(out, overwrite, kind="model", inputs=run_inputs(config))
        ckpt_dir = config.checkpoints_path
        if _is_main_process():
            _remove_discarded(ckpt_dir)
        last_checkpoint = _prepare_checkpoint_dir(ckpt_dir, config, resume=resume, overwrite=overwrite)
        yield out, ckpt_dir, last_checkpoint


def _record_start(config, ckpt_dir: Path, model, evaluator, resuming: bool) -> dict[str, float]:
    """The untouched model's dev metrics: measured and saved with the config beside the checkpoints on a fresh
    run, read back from there on a resumed one.

    Written only once inputs and model have loaded, so a bad argument leaves nothing behind.
    """
    if resuming:
        return _read_base_dev(ckpt_dir)
    base_dev: dict[str, float] = {}
    if evaluator is not None:
        base_dev = evaluator(model)
        logger.info("dev metrics before training: %s", base_dev)
    if _is_main_process():
        write_json(ckpt_dir / CONFIG_NAME, {"config": config.to_dict(), "base_dev_metrics": base_dev})
    return base_dev


def model_card_restorer(evaluator, base_dev: dict[str, float]):
    """A trainer callback for a resumed run: puts back into the model card what the interrupted run had
    recorded there (the base model's dev row, the loss and dev rows of the steps before the checkpoint, the
    latest dev metrics), from the checkpoint's log history. Without it a resumed model's README.md would hold
    only the steps trained after the resumption, and no dev metrics at all when resumed from the last step.
    """
    from transformers import TrainerCallback

    class RestoreModelCard(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            card = getattr(model, "model_card_data", None)
            if card is None or card.training_logs:
                return
            if evaluator is not None:
                evaluator.prefix_name_to_metrics({}, evaluator.name)  # its primary metric as after an evaluation
                if base_dev:
                    card.set_evaluation_metrics(evaluator, dict(base_dev), -1, -1)
            # in the evaluator's order: a checkpoint's trainer_state.json stores each entry's keys sorted
            names = [f"{evaluator.name}_{m}" for m in evaluator.metrics] if evaluator is not None else []
            for entry in state.log_history:
                if "loss" in entry:  # as sentence-transformers' ModelCardCallback.on_log records it
                    if card.training_logs and card.training_logs[-1]["Step"] == entry["step"]:
                        card.training_logs[-1]["Training Loss"] = entry["loss"]
                    else:
                        card.training_logs.append({"Epoch": entry["epoch"], "Step": entry["step"],
                                                   "Training Loss": entry["loss"]})
                metrics = {name: entry[f"eval_{name}"] for name in names if f"eval_{name}" in entry}
                if metrics:
                    card.set_evaluation_metrics(evaluator, metrics, entry["epoch"], entry["step"])

    return RestoreModelCard()


def _read_base_dev(ckpt_dir: Path) -> dict[str, float]:
    saved = ckpt_dir / CONFIG_NAME
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8")).get("base_dev_metrics", {})
    return {}


def _resolve_precision(precision: str, torch) -> str:
    if precision != "auto":
        if precision in ("bf16", "fp16") and not torch.cuda.is_available():
            raise InputError(f"{precision} training needs a GPU", field="precision")
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def gathers_across_processes(loss) -> bool:
    """Whether ``loss`` (or the ranking loss a ``MatryoshkaLoss`` wraps) all-gathers the in-batch candidates
    of every process: what the manifest records, read from the loss the trainer was given."""
    return bool(getattr(getattr(loss, "loss", loss), "gather_across_devices", False))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _save_model(model, config: BiEncoderTrainingConfig, data: TripletTrainingData, result: TrainingResult,
                precision: str, overwrite: bool, dev_source: dict[str, Any], gathered: bool = False) -> None:
    """Write the finished model atomically: a complete directory appears at ``out`` or nothing does."""
    from colmed.core.provenance import run_manifest

    manifest = run_manifest(
        config.to_dict(), packages=("datasets", "accelerate"),
        kind="colmed-bi-encoder",
        base_model=config.base_model,
        loss={"name": config.loss, "scale": config.scale, "temperature": config.temperature,
              "matryoshka_dims": config.matryoshka_dims, "gather_across_processes": gathered},
        precision=precision,
        max_seq_length={"training_documents": config.max_doc_length,
                        "training_queries": config.max_query_length, "inference": model.max_seq_length},
        world_size=_world_size(),
        prompts={"query": model.prompts.get("query", ""), "document": model.prompts.get("document", "")},
        data={**data.source, "stats": data.stats},
        dev=dev_source,
        metrics={"base_dev": result.base_dev_metrics, "best_dev": result.best_dev_metric,
                 "best_checkpoint": Path(result.best_checkpoint).name if result.best_checkpoint else None,
                 "dev_history": [h for h in result.log_history if any(k.startswith("eval_") for k in h)]},
        train_seconds=round(result.train_seconds, 1),
        global_steps=result.global_steps,
        loss_curve=[[h["step"], h["loss"]] for h in result.log_history if "loss" in h],
        resumed_from=result.resumed_from,
    )
    with atomic_directory(config.out, overwrite=overwrite, kind="model", inputs=run_inputs(config),
                          locked=True) as tmp:
        model.save(str(tmp))
        write_json(tmp / "manifest.json", manifest)
        card = tmp / "README.md"
        existing = card.read_text(encoding="utf-8") if card.is_file() else ""
        card.write_text(existing + "\n\n" + _colmed_card_section(manifest), encoding="utf-8")


def _colmed_card_section(manifest: dict[str, Any]) -> str:
    cfg = manifest["config"]
    base_dev = manifest["metrics"]["base_dev"]
    hyper = ["epochs", "max_steps", "batch_size", "learning_rate", "warmup_ratio", "weight_decay", "temperature",
             "loss", "num_negatives", "matryoshka_dims", "max_query_length", "max_doc_length", "seed"]
    lines = [
        "## colmed training",
        "",
        f"- **Base model:** `{manifest['base_model']}`",
        f"- **Preset:** {cfg.get('preset') or 'none'}",
        f"- **Triplets:** `{manifest['data'].get('path')}` (sha256 `{manifest['data'].get('sha256', '')[:16]}...`)",
        f"- **Data manifest:** `{manifest['data'].get('data_manifest', 'n/a')}`",
        f"- **Data counts:** " + ", ".join(f"{k}={v}" for k, v in sorted(manifest["data"]["stats"].items())),
        f"- **Prompts:** query {manifest['prompts']['query']!r}, document {manifest['prompts']['document']!r}",
        f"- **Precision:** {manifest['precision']}, GPUs/processes: {manifest['world_size']}",
        f"- **Training time:** {manifest['train_seconds']} s, {manifest['global_steps']} steps",
        "",
        "| hyperparameter | value |",
        "|---|---|",
        *[f"| {k} | {cfg.get(k)} |" for k in hyper],
        "",
        f"Dev evaluation ({manifest['dev'].get('source')}): base model "
        + (", ".join(f"{k}={v:.4f}" for k, v in base_dev.items()) if base_dev else "not measured")
        + (f"; best fine-tuned ndcg@10={manifest['metrics']['best_dev']:.4f}"
           f" ({manifest['metrics']['best_checkpoint']})" if manifest["metrics"]["best_dev"] is not None else ""),
        "",
        "Full configuration, input hashes and package versions: `manifest.json`.",
        "",
    ]
    return "\n".join(lines)
