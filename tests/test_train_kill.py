"""Fault injection for the trainers (issue #16): ``colmed train bi-encoder`` and ``colmed train colbert`` really
killed with SIGKILL and SIGTERM at named points (while measuring a model on dev, in the middle of writing a
checkpoint, just after one, while writing the finished model), then the same command run again. Asserted: the
re-run resumes from the newest complete checkpoint (its log says which, the manifest records it), a kill leaves
only resumable state and the re-run nothing but the model, and the model's files are byte-identical to an
uninterrupted run's; manifest.json and the model card differ only where they record wall time, a date, the code
checkout or the resumption itself (``VARYING``).

The kill points are exact without any hook in colmed: the killed runs go through ``LAUNCHER``, which wraps one
library function so that the process announces the point (a file appears) and waits there for its signal. The
reference and the re-runs are the plain CLI. Tiny random models and triplets generated from the bundled sample
keep training to seconds; a run's cost is the interpreter's imports (~13 s of CPU), so the default run has one
chain of kills (bi-encoder) and the rest is ``slow``. One torch thread everywhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# Runs the colmed CLI (argv[3:]); at the point argv[1] writes the file argv[2] and waits to be killed.
LAUNCHER = r'''
import sys, time
from pathlib import Path

point, ready, *args = sys.argv[1:]


def wait_here():
    Path(ready).write_text("at " + point)
    while True:
        time.sleep(1)


if point == "dev-eval":  # this process's first dev evaluation: the base model's, on a fresh start
    from colmed.bi_encoder import dev_eval

    dev_eval.RetrievalEvaluator.__call__ = lambda self, model, *a, **kw: wait_here()
elif point.startswith(("in-checkpoint-", "after-checkpoint-")):
    import transformers

    step = int(point.rsplit("-", 1)[1])
    if point.startswith("in-"):  # the checkpoint's weights are written; optimizer, RNG and trainer state not yet
        original = transformers.Trainer._save_optimizer_and_scheduler

        def hooked(self, output_dir):
            if self.state.global_step == step:
                wait_here()
            return original(self, output_dir)

        transformers.Trainer._save_optimizer_and_scheduler = hooked
    else:
        original = transformers.Trainer._save_checkpoint

        def hooked(self, *a, **kw):
            result = original(self, *a, **kw)
            if self.state.global_step == step:
                wait_here()
            return result

        transformers.Trainer._save_checkpoint = hooked
elif point == "final-save":  # the model is in its temp folder beside --out; its manifest is next
    import colmed.bi_encoder.train as dense
    import colmed.colbert.training as colbert

    original = dense.write_json

    def hooked(path, obj):
        if Path(path).name == "manifest.json" and Path(path).parent.name.endswith(".building"):
            wait_here()
        return original(path, obj)

    dense.write_json = colbert.write_json = hooked
else:
    raise SystemExit(f"unknown kill point {point}")

from colmed.cli import main

sys.argv = ["colmed", *args]
main()
'''

# What legitimately differs between an interrupted-and-resumed run and an uninterrupted one.
VARYING = {
    "created": "when the manifest was written",
    "git_sha": "the code checkout; equal unless a commit lands between the two runs",
    "train_seconds": "wall time of this invocation's training only",
    "resumed_from": "the checkpoint a resumed run continued from (null for an uninterrupted run)",
}
# per dev evaluation in metrics.dev_history: the trainer's timing of it
VARYING_DEV = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
# model card lines that state durations (sentence-transformers' "Training Time" section, colmed's own line)
CARD_DURATIONS = re.compile(r"^- \*\*(Training|Evaluation|Total)\*\*: .*\n|^- \*\*Training time:\*\* .*\n", re.M)


@pytest.fixture(scope="module")
def triplets(tmp_path_factory, sample_dataset_dir) -> Path:
    """16 triplets (12 train, 4 dev) with 2 mined negatives each, from the bundled sample (LLM-free)."""
    from colmed.api import generate

    out = tmp_path_factory.mktemp("triplets") / "triplets"
    generate(notes=str(sample_dataset_dir), out=str(out), generator="inverse_cloze", chunk_words=30,
             queries_per_note=3, num_negatives=2, dev_fraction=0.2, progress=False)
    return out


def _bi_encoder_args(triplets: Path, base: str) -> list[str]:
    return ["train", "bi-encoder", "--triplets", str(triplets), "--base", base, "--out", "model", "--max-steps", "6",
            "--batch-size", "2", "--eval-steps", "2", "--learning-rate", "1e-3", "--max-query-length", "16",
            "--max-doc-length", "48", "--resume"]


def _colbert_args(triplets: Path, base: str) -> list[str]:
    return ["train", "colbert", "--triplets", str(triplets), "--base", base, "--out", "model", "--max-steps", "6",
            "--batch-size", "2", "--eval-steps", "2", "--learning-rate", "1e-3", "--dim", "16",
            "--max-query-length", "16", "--max-doc-length", "48", "--quiet", "--resume"]


def _run(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    """The plain command, run in ``folder`` (``--out model``: the manifests of every run name the same folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "colmed.cli", *args], cwd=folder, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _kill_at(folder: Path, args: list[str], point: str, sig: int) -> str:
    """Run the command in ``folder``, send ``sig`` once it waits at ``point`` (it must not have finished); returns
    what it wrote to stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    ready, log = (folder.parent / f"{folder.name}.{what}" for what in ("ready", "log"))
    ready.unlink(missing_ok=True)
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, point, str(ready), *args], cwd=folder, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 600
    while proc.poll() is None and not ready.exists() and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None or not ready.exists():
        proc.kill()
        raise AssertionError(f"never reached {point}: exit {proc.wait()}\n{log.read_text()[-3000:]}")
    proc.send_signal(sig)
    proc.wait(timeout=120)
    ready.unlink()
    return log.read_text()


def _complete_checkpoints(folder: Path) -> list[str]:
    from colmed.bi_encoder.train import checkpoints

    return [c.name for c in checkpoints(folder / "model.checkpoints")[0]]


def _assert_only_resumable_state(folder: Path, sig: int, where: str) -> None:
    """After a kill: no model; beside it only its checkpoints and, after SIGKILL, the dead writer's lock and temp
    folder (both recognised and removed by the next run). SIGTERM unwinds: the writer removes them itself."""
    assert not (folder / "model").exists(), f"{where}: a killed run left a finished-looking model"
    left = sorted(p.name for p in folder.iterdir())
    allowed = re.compile(r"^model\.checkpoints$|^\.model\.lock$|^\.model\.\d+-[a-z0-9_]{8}\.building$")
    assert all(allowed.match(name) for name in left), (where, left)
    if sig == signal.SIGTERM:
        assert not any(name.startswith(".") for name in left), (where, left)


def _comparable_manifest(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    for key in VARYING:
        manifest.pop(key, None)
    for entry in manifest["metrics"]["dev_history"]:
        for key in VARYING_DEV:
            entry.pop(key, None)
    return manifest


def _assert_same_model(got: Path, ref: Path) -> None:
    files = sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file())
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) == files
    for name in files:
        if name not in ("manifest.json", "README.md"):
            assert (got / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs"
    assert _comparable_manifest(got / "manifest.json") == _comparable_manifest(ref / "manifest.json")
    card, ref_card = ((p / "README.md").read_text() for p in (got, ref))
    assert CARD_DURATIONS.sub("", card) == CARD_DURATIONS.sub("", ref_card), "the model card differs"


def _resume_and_check(folder: Path, args: list[str], reference: Path) -> None:
    """The same command again: it resumes from the newest complete checkpoint, finishes, leaves only the model."""
    expected = (_complete_checkpoints(folder) or [None])[-1]
    done = _run(folder, args)
    if expected:
        assert f"resuming from {Path('model.checkpoints') / expected} (step {expected.split('-')[1]})" in done.stderr
    else:
        assert "no checkpoint to resume from" in done.stderr
    manifest = json.loads((folder / "model" / "manifest.json").read_text())
    assert manifest["resumed_from"] == expected
    assert sorted(p.name for p in folder.iterdir()) == ["model"], "litter beside the model"
    _assert_same_model(folder / "model", reference)


@pytest.fixture(scope="module")
def bi_encoder_args(triplets, tiny_st_model_dir) -> list[str]:
    return _bi_encoder_args(triplets, tiny_st_model_dir)


@pytest.fixture(scope="module")
def colbert_args(triplets, tiny_bert_dir) -> list[str]:
    return _colbert_args(triplets, tiny_bert_dir)


@pytest.fixture(scope="module")
def bi_encoder_reference(tmp_path_factory, bi_encoder_args) -> Path:
    folder = tmp_path_factory.mktemp("bi-encoder-reference")
    _run(folder, bi_encoder_args)
    assert json.loads((folder / "model" / "manifest.json").read_text())["resumed_from"] is None
    return folder / "model"


@pytest.fixture(scope="module")
def colbert_reference(tmp_path_factory, colbert_args) -> Path:
    folder = tmp_path_factory.mktemp("colbert-reference")
    _run(folder, colbert_args)
    return folder / "model"


def test_bi_encoder_killed_in_a_checkpoint_then_in_the_final_save_resumes_to_the_same_model(
        bi_encoder_args, bi_encoder_reference, tmp_path):
    """SIGKILL after checkpoint-4's weights were written but before its trainer state: the next run removes the
    half-written folder (resuming from it failed with a traceback, for good) and continues from checkpoint-2.
    That run is SIGKILLed with the model half-written in its temp folder; the plain re-run removes the dead
    writer's temp folder and lock, resumes at the last step without training one, and writes the same model,
    manifest and model card as an uninterrupted run."""
    run = tmp_path / "run"
    _kill_at(run, bi_encoder_args, "in-checkpoint-4", signal.SIGKILL)
    _assert_only_resumable_state(run, signal.SIGKILL, "in checkpoint-4")
    assert (run / "model.checkpoints" / "checkpoint-4").is_dir()
    assert _complete_checkpoints(run) == ["checkpoint-2"]
    log = _kill_at(run, bi_encoder_args, "final-save", signal.SIGKILL)
    assert "removing checkpoint-4, left half-written by an interrupted run" in log
    assert "resuming from model.checkpoints/checkpoint-2 (step 2)" in log
    _assert_only_resumable_state(run, signal.SIGKILL, "final save")
    assert any(p.name.endswith(".building") for p in run.iterdir()), "the kill came before the model was written"
    assert _complete_checkpoints(run)[-1] == "checkpoint-6"
    _resume_and_check(run, bi_encoder_args, bi_encoder_reference)


@pytest.mark.slow
def test_colbert_killed_while_writing_the_model_resumes_at_its_last_step(colbert_args, colbert_reference, tmp_path):
    """SIGKILL with the model half-written in its temp folder: the re-run removes the dead writer's temp folder and
    lock, resumes from the last checkpoint without training a step, and writes the same model (and card)."""
    run = tmp_path / "run"
    _kill_at(run, colbert_args, "final-save", signal.SIGKILL)
    _assert_only_resumable_state(run, signal.SIGKILL, "final save")
    assert any(p.name.endswith(".building") for p in run.iterdir()), "the kill came before the model was written"
    assert _complete_checkpoints(run)[-1] == "checkpoint-6"
    _resume_and_check(run, colbert_args, colbert_reference)


def test_a_finished_runs_half_removed_checkpoints_are_cleaned_by_the_next_run(tmp_path):
    """A kill while a finished run removes its checkpoints leaves them under a discard name, never as a
    checkpoints folder; the next run writing that model removes them before it starts."""
    from colmed.bi_encoder.config import BiEncoderTrainingConfig
    from colmed.bi_encoder.train import discard_checkpoints, open_run

    ckpt = tmp_path / "model.checkpoints"
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "checkpoint-2" / "optimizer.pt").write_bytes(b"x" * 10)
    discard_checkpoints(ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    doomed = tmp_path / f".model.checkpoints.{os.getpid()}.discarded"  # as a kill mid-removal leaves it
    (doomed / "checkpoint-2").mkdir(parents=True)
    (tmp_path / ".other.checkpoints.1.discarded").mkdir()  # another model's: not ours to remove
    triplets = tmp_path / "t.jsonl"
    triplets.write_text("")
    config = BiEncoderTrainingConfig(base_model="m", triplets=str(triplets), out=str(tmp_path / "model"))
    with open_run(config, resume=True, overwrite=False) as (_, _, last_checkpoint):
        assert last_checkpoint is None and (tmp_path / ".model.lock").is_file()
        assert not doomed.exists() and (tmp_path / ".other.checkpoints.1.discarded").is_dir()
    assert not (tmp_path / ".model.lock").exists()


@pytest.mark.slow
def test_bi_encoder_killed_at_every_point_resumes_to_the_same_model(bi_encoder_args, bi_encoder_reference, tmp_path):
    """SIGTERM while measuring the base model, SIGKILL right after checkpoint-2, SIGTERM while writing the model;
    then the plain command."""
    run = tmp_path / "run"
    _kill_at(run, bi_encoder_args, "dev-eval", signal.SIGTERM)
    assert not run.exists() or not any(run.iterdir()), "killed before training: nothing to keep"
    _kill_at(run, bi_encoder_args, "after-checkpoint-2", signal.SIGKILL)
    _assert_only_resumable_state(run, signal.SIGKILL, "after checkpoint-2")
    assert _complete_checkpoints(run) == ["checkpoint-2"]
    _kill_at(run, bi_encoder_args, "final-save", signal.SIGTERM)
    _assert_only_resumable_state(run, signal.SIGTERM, "final save")
    _resume_and_check(run, bi_encoder_args, bi_encoder_reference)


@pytest.mark.slow
def test_colbert_killed_at_every_point_resumes_to_the_same_model(colbert_args, colbert_reference, tmp_path):
    """SIGKILL while measuring the untrained model, SIGKILL in the middle of the first checkpoint (nothing
    complete: the re-run starts over), SIGTERM right after checkpoint-4, SIGKILL during a resumed run's first dev
    evaluation; then the plain command."""
    run = tmp_path / "run"
    _kill_at(run, colbert_args, "dev-eval", signal.SIGKILL)
    _kill_at(run, colbert_args, "in-checkpoint-2", signal.SIGKILL)
    _assert_only_resumable_state(run, signal.SIGKILL, "in checkpoint-2")
    assert _complete_checkpoints(run) == []
    _kill_at(run, colbert_args, "after-checkpoint-4", signal.SIGTERM)
    _assert_only_resumable_state(run, signal.SIGTERM, "after checkpoint-4")
    assert _complete_checkpoints(run) == ["checkpoint-2", "checkpoint-4"]
    _kill_at(run, colbert_args, "dev-eval", signal.SIGKILL)  # resumed at step 4: its first evaluation is step 6's
    _assert_only_resumable_state(run, signal.SIGKILL, "resumed run's dev evaluation")
    _resume_and_check(run, colbert_args, colbert_reference)
