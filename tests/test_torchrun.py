"""Multi-process training: both trainers under ``torchrun --nproc_per_node 2`` on CPU (gloo), through the CLI.

The README's multi-GPU commands are these same commands on GPUs (NCCL). What a user relies on, checked here:

- the processes train one model data-parallel: each takes its share of the batches (an epoch of 12 training
  rows at 2 per process and step is 3 steps, not 6);
- in-batch negatives are gathered across processes: each query is scored against the positives and
  negatives of both processes' batches. With a temperature so high that every logit is ~0, the first
  step's loss is log(number of candidates per query): log(2 processes x 2 queries x (1 positive + 1 negative))
  = log 8, where one process's own batch alone would give log 4;
- only the main process writes: one model folder with its manifest (world size 2, gather recorded), no
  checkpoints or temporary folders left beside it, one "wrote" line.

The default losses run in the default test command; GradCache and distillation are marked slow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")

PASSAGES = ["aspirin lowers fever and relieves mild pain", "insulin treats type 1 diabetes",
            "lisinopril can cause a dry cough", "statins lower LDL cholesterol",
            "metformin is first-line therapy for type 2 diabetes", "ibuprofen is an anti-inflammatory drug",
            "albuterol relieves bronchospasm in asthma", "warfarin needs INR monitoring"]
TRAIN_ROWS, PER_PROCESS_BATCH, PROCESSES = 12, 2, 2
CANDIDATES_PER_QUERY = PROCESSES * PER_PROCESS_BATCH * (1 + 1)  # gathered positives + one hard negative each
COMMON = ["--epochs", "1", "--batch-size", str(PER_PROCESS_BATCH), "--max-query-length", "16",
          "--max-doc-length", "32"]
# MaxSim sums up to 16 query tokens' similarities: a temperature of 1e4 keeps every ColBERT logit under 0.002,
# and 1e3 every cosine logit under 0.001.
FAMILIES = {"bi-encoder": ["--temperature", "1000"],
            "colbert": ["--temperature", "10000", "--max-steps", "-1", "--dim", "16", "--quiet"]}


def _triplets(path: Path) -> Path:
    """16 records, one hard negative and teacher scores each; every 4th is a dev record, leaving 12 to train."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(16):
            pos, neg = PASSAGES[i % 8], PASSAGES[(i + 3) % 8]
            f.write(json.dumps({"query_id": f"q{i}", "query": " ".join(pos.split()[:3]) + f" {i}",
                                "positive_id": f"p{i % 8}", "positive": pos, "negative_ids": [f"p{(i + 3) % 8}"],
                                "negatives": [neg], "teacher_scores": [9.0, 1.0],
                                "split": "dev" if i % 4 == 0 else "train"}) + "\n")
    return path


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # --standalone: a local rendezvous on a free port, so concurrent runs on one machine do not collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(PROCESSES),
               "-m", "colmed.cli", "train", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def _train(family: str, base: str, tmp_path: Path, *extra: str) -> tuple[Path, dict]:
    """Run ``colmed train <family>`` under torchrun; check that one process wrote one model; its manifest."""
    runs = tmp_path / "runs"
    runs.mkdir()
    triplets = _triplets(runs / "triplets.jsonl")
    out = runs / "model"
    done = _torchrun([family, "--triplets", str(triplets), "--base", base, "--out", str(out), *COMMON,
                      *FAMILIES[family], *extra], cwd=tmp_path)
    assert sorted(p.name for p in runs.iterdir()) == ["model", "triplets.jsonl"]  # no checkpoints, no temp folders
    assert done.stdout.count("wrote ") == 1, done.stdout
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["world_size"] == PROCESSES
    steps = manifest["global_steps"]
    assert steps == TRAIN_ROWS // (PROCESSES * PER_PROCESS_BATCH)  # each process took its share of the batches
    return out, manifest


def _first_step_loss(manifest: dict) -> float:
    step, loss = manifest["loss_curve"][0]
    assert step == 1
    return loss


def _check_gathered(manifest: dict) -> None:
    assert manifest["loss"]["gather_across_processes"] is True
    assert _first_step_loss(manifest) == pytest.approx(math.log(CANDIDATES_PER_QUERY), abs=0.01)


@pytest.mark.parametrize("loss", ["mnrl", pytest.param("cached_mnrl", marks=pytest.mark.slow)])
def test_bi_encoder_trains_data_parallel_with_gathered_negatives(tmp_path, tiny_st_model_dir, loss):
    out, manifest = _train("bi-encoder", tiny_st_model_dir, tmp_path, "--loss", loss, "--mini-batch-size", "1")
    assert manifest["data"]["stats"]["train_rows"] == TRAIN_ROWS
    _check_gathered(manifest)
    assert "GPUs/processes: 2" in (out / "README.md").read_text(encoding="utf-8")

    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out)).encode(["aspirin"]).shape == (1, 32)


@pytest.mark.parametrize("loss", ["mnrl", pytest.param("cached_mnrl", marks=pytest.mark.slow)])
def test_colbert_trains_data_parallel_with_gathered_negatives(tmp_path, tiny_bert_dir, loss):
    out, manifest = _train("colbert", tiny_bert_dir, tmp_path, "--loss", loss, "--mini-batch-size", "1")
    assert manifest["data"]["examples"] == TRAIN_ROWS and manifest["config"]["nway"] == 2
    _check_gathered(manifest)

    from colmed.colbert.multivector import conventions, load_colbert

    assert conventions(load_colbert(out))["dim"] == 16


@pytest.mark.slow
def test_colbert_distillation_trains_data_parallel(tmp_path, tiny_bert_dir):
    """Distillation scores each query's own candidates only: nothing to gather, one model all the same."""
    _, manifest = _train("colbert", tiny_bert_dir, tmp_path, "--distill")
    assert manifest["loss"]["name"] == "distill_kl" and manifest["loss"]["gather_across_processes"] is False
