"""Fault injection (issue #16): real processes killed with SIGKILL and SIGTERM at several points of
``colmed index``, ``colmed generate`` and ``colmed study`` (the orchestrator alone included, and a stage's own
children); the trainers' kill tests are in ``tests/test_train_kill.py``. After each kill: nothing but
resumable state is left; the re-run finishes with every record exactly once and outputs byte-identical to an
uninterrupted run.

Notes are the bundled sample's corpus repeated with distinct ids and sentences (600 notes, 120 checkpoint
parts), so the LLM-free ``inverse_cloze`` generator runs long enough to be killed mid-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colmed.data.triplets import read_triplets

ROOT = Path(__file__).resolve().parents[1]
# PYTHONHASHSEED fixed: bm25s numbers its vocabulary in set order, so an index's bytes (not its results)
# differ between any two processes otherwise, killed or not.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}
# Files of a finished triplet output whose bytes must not depend on interruptions (manifest.json holds times).
STABLE_FILES = ("triplets.jsonl", "train/triplets.jsonl", "dev/triplets.jsonl", "rejects.jsonl",
                "export/sentence_transformers/train.jsonl", "export/sentence_transformers/dev.jsonl",
                "export/colbert/triples.jsonl", "export/colbert/collection.tsv", "export/colbert/queries.tsv")


@pytest.fixture(scope="module")
def many_notes(tmp_path_factory, sample_dataset_dir) -> Path:
    docs = [json.loads(line) for line in (Path(sample_dataset_dir) / "corpus.jsonl").read_text().splitlines()
            if line.strip()]
    path = tmp_path_factory.mktemp("notes") / "notes.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(600):
            d = docs[i % len(docs)]
            f.write(json.dumps({"id": f"n{i:04d}", "title": d["title"],
                                "text": f"{d['text']} Visit {i} was documented on day {i % 29 + 1}."}) + "\n")
    return path


def _colmed(*args) -> list[str]:
    return [sys.executable, "-m", "colmed.cli", *map(str, args)]


def _generate_args(notes: Path, out: Path, *extra) -> list[str]:
    return _colmed("generate", "--notes", notes, "--out", out, "--generator", "inverse_cloze", "--chunk-words", 60,
                   "--batch-notes", 5, "--negatives", 2, "--range-max", 8, "--dev-fraction", 0.2, "--no-progress",
                   *extra)


def _kill_when(cmd: list[str], ready, sig: int, whole_group: bool = False, timeout: float = 120) -> bool:
    """Start ``cmd``; once ``ready()`` holds, send ``sig`` (to the process, or its group). True if it was killed
    before it finished."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not ready():
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        (os.killpg if whole_group else os.kill)(proc.pid, sig)
    proc.wait(timeout=60)
    return killed


def _done_parts(partial: Path, stage: str) -> int:
    return len(list((partial / "_work" / stage).glob("part-*.done.json")))


def _litter(folder: Path, name: str) -> list[str]:
    """Siblings of output ``name`` that are neither it nor its resumable checkpoints."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}"))


def _assert_same_outputs(got: Path, ref: Path) -> None:
    ids = [r.query_id for r in read_triplets(got)]
    assert len(ids) == len(set(ids)), "a record was duplicated"
    assert ids == [r.query_id for r in read_triplets(ref)], "a record was lost or reordered"
    for name in STABLE_FILES:
        assert (got / name).read_bytes() == (ref / name).read_bytes(), name
    m, r = (json.loads((p / "manifest.json").read_text()) for p in (got, ref))
    assert m["counts"] == r["counts"] and m["fingerprint"] == r["fingerprint"]
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*")) == \
        sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*"))


@pytest.fixture(scope="module")
def generate_reference(many_notes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "triplets"
    done = subprocess.run(_generate_args(many_notes, out), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


# (signal, what to wait for before sending it): early and late in generation, and during mining.
GENERATE_POINTS = [
    ("SIGKILL after 3 parts", signal.SIGKILL, lambda p: _done_parts(p, "generate") >= 3),
    ("SIGTERM after 40 parts", signal.SIGTERM, lambda p: _done_parts(p, "generate") >= 40),
    ("SIGKILL after 100 parts", signal.SIGKILL, lambda p: _done_parts(p, "generate") >= 100),
    ("SIGKILL while mining", signal.SIGKILL, lambda p: (p / "_work" / "mine").is_dir()),
]


def test_generate_killed_at_several_points_resumes_to_identical_outputs(many_notes, generate_reference, tmp_path):
    out = tmp_path / "triplets"
    partial = tmp_path / "triplets.partial"
    killed = []
    for name, sig, ready in GENERATE_POINTS:
        if _kill_when(_generate_args(many_notes, out), lambda: ready(partial), sig):
            killed.append(name)
            assert not out.exists(), f"{name}: a killed run left a finished-looking output"
            # only resumable state is left: the checkpoints and (after SIGKILL) the dead writer's lock file
            assert set(_litter(tmp_path, "triplets")) <= {".triplets.lock"}, name
            if sig == signal.SIGTERM:
                assert _litter(tmp_path, "triplets") == [], "SIGTERM: the writer cleans up its lock"
    assert len(killed) >= 3, f"the run finished before most kill points: killed at {killed}"
    done = subprocess.run(_generate_args(many_notes, out), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triplets"], "litter beside the finished output"
    _assert_same_outputs(out, generate_reference)


def test_generate_killed_then_resumed_with_other_negatives_reuses_parts(many_notes, tmp_path):
    """SIGKILL mid-generation, then the same command with another --negatives (a late setting): the finished
    generation parts are kept and the result equals an uninterrupted run with the new value."""
    out, partial = tmp_path / "triplets", tmp_path / "triplets.partial"
    assert _kill_when(_generate_args(many_notes, out), lambda: _done_parts(partial, "generate") >= 30,
                      signal.SIGKILL)
    kept = {p.name: p.stat().st_mtime_ns for p in (partial / "_work" / "generate").glob("part-*.queries.jsonl")}
    assert len(kept) >= 30
    resumed = subprocess.run(_generate_args(many_notes, out, "--negatives", 1), cwd=ROOT, env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ref = tmp_path / "ref"
    assert subprocess.run(_generate_args(many_notes, ref, "--negatives", 1), cwd=ROOT, env=ENV).returncode == 0
    _assert_same_outputs(out, ref)


def test_generate_killed_then_resumed_with_other_batch_size_is_refused_naming_it(many_notes, tmp_path):
    out, partial = tmp_path / "triplets", tmp_path / "triplets.partial"
    assert _kill_when(_generate_args(many_notes, out), lambda: _done_parts(partial, "generate") >= 10,
                      signal.SIGKILL)
    other = _generate_args(many_notes, out)
    other[other.index("--batch-notes") + 1] = "7"
    refused = subprocess.run(other, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "field 'batch_notes'" in refused.stderr and "batch_notes: 5 -> 7" in refused.stderr


# ------------------------------------------------------------------ study

def _study_config(tmp_path: Path, notes: Path, dataset: Path, out: Path) -> Path:
    import yaml

    cfg = {"out": str(out), "data": {"notes": str(notes), "num_notes": None, "generator": "inverse_cloze",
                                     "negatives": 2, "args": {"batch-notes": 5, "chunk-words": 60, "range-max": 8}},
           "bi_encoder": {"enabled": False}, "colbert": {"enabled": False},
           "benchmark": {"datasets": [str(dataset)], "data_dir": None, "baseline": "bm25"}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _study(config: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(_colmed("study", "--config", config, *extra), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


def _lock_is_free(out: Path) -> bool:
    from colmed.core.errors import OutputBusyError
    from colmed.core.io import output_lock

    try:
        with output_lock(out):
            return True
    except OutputBusyError:
        return False


def _study_litter(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.name.endswith((".tmp", ".building", ".lock", ".started", ".partial")) or ".old-" in p.name)


# A stage that starts a worker of its own (as a training stage starts data-loader workers, or generation an
# inference server); the worker notes a SIGTERM (a chance to clean up) before it exits.
_WORKER = """
import os, signal, sys, time
from pathlib import Path
d = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: (d.joinpath("worker.sigterm").write_text("1"), sys.exit(0)))
d.joinpath("worker.pid").write_text(str(os.getpid()))
time.sleep(300)
"""
_STAGE = f"""
import os, subprocess, sys, time
from pathlib import Path
Path(sys.argv[1], "stage.pid").write_text(str(os.getpid()))
subprocess.Popen([sys.executable, "-c", {_WORKER!r}, sys.argv[1]])
time.sleep(300)
"""
# The orchestrator's part of `colmed study`: run_tied, with the CLI's SIGTERM -> exit.
_ORCHESTRATOR = f"""
import signal, sys
from colmed.stages import run_tied
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
run_tied([sys.executable, "-c", {_STAGE!r}, sys.argv[1]])
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # an orphan's zombie waits for a reaper; it runs nothing


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_stages_own_children_die_with_the_orchestrator(tmp_path, sig):
    """The orchestrator alone is signalled: its stage and the worker the stage started both stop, the worker
    first getting SIGTERM. (A parent-death signal set on the stage reached only the stage: after `kill -9` of
    the orchestrator its children kept running.)"""
    orchestrator = subprocess.Popen([sys.executable, "-c", _ORCHESTRATOR, str(tmp_path)], cwd=ROOT, env=ENV)
    pids: list[int] = []
    try:
        deadline = time.time() + 60
        while not (tmp_path / "worker.pid").is_file() and time.time() < deadline:
            time.sleep(0.05)
        pids = [int((tmp_path / f"{name}.pid").read_text()) for name in ("stage", "worker")]
        os.kill(orchestrator.pid, sig)
        orchestrator.wait(timeout=30)
        deadline = time.time() + 20
        while any(map(_alive, pids)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, pids)), "a stage process outlived the orchestrator"
        assert (tmp_path / "worker.sigterm").is_file(), "the worker was not given SIGTERM first"
    finally:
        for pid in [orchestrator.pid, *pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_study_orchestrator_killed_alone_takes_its_stage_down_and_resumes(many_notes, sample_dataset_dir,
                                                                          tmp_path):
    ref_out = tmp_path / "reference"
    ref = _study(_study_config(tmp_path, many_notes, sample_dataset_dir, ref_out))
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "study"
    config = _study_config(tmp_path, many_notes, sample_dataset_dir, out)
    partial = out / "stages" / "triplets.partial"
    triplets = out / "stages" / "triplets"
    for sig, parts in ((signal.SIGKILL, 5), (signal.SIGTERM, 60)):
        # only the orchestrator's pid: its generate stage must not live on as an orphan
        assert _kill_when(_colmed("study", "--config", config), lambda: _done_parts(partial, "generate") >= parts,
                          sig), "the study finished before it could be killed"
        deadline = time.time() + 20
        while time.time() < deadline and not _lock_is_free(triplets):
            time.sleep(0.1)
        assert _lock_is_free(triplets), f"{signal.Signals(sig).name}: the generate stage outlived the orchestrator"
        frozen = _done_parts(partial, "generate")
        time.sleep(1.0)
        assert _done_parts(partial, "generate") == frozen, "an orphan is still generating"
        assert not triplets.exists()

    done = _study(config)
    assert done.returncode == 0, done.stderr
    assert _study_litter(out) == []
    _assert_same_outputs(triplets, ref_out / "stages" / "triplets")
    got, want = (json.loads((o / "benchmark" / "results.json").read_text())["scores"] for o in (out, ref_out))
    assert got == want


@pytest.mark.slow
def test_study_recovers_a_finished_stage_without_its_marker_and_a_late_setting_after_a_crash(
        many_notes, sample_dataset_dir, tmp_path):
    from colmed.stages import StageRunner
    from colmed.study import StudyConfig, build_stages

    out = tmp_path / "study"
    config = _study_config(tmp_path, many_notes, sample_dataset_dir, out)
    assert _study(config).returncode == 0
    # The orchestrator died after `colmed generate` finished but before writing its marker; a temp file of
    # a half-written marker is left too.
    stages = StageRunner(build_stages(StudyConfig.from_yaml(config)))
    generate = stages.by_name["generate"]
    marker = StageRunner.marker(generate)
    key = json.loads(marker.read_text())["key"]
    marker.unlink()
    marker.with_suffix(".started").write_text(json.dumps({"key": key}))
    stray = marker.parent / ".triplets.stage.json.abcd1234.tmp"
    stray.write_text("{")
    before = (out / "stages" / "triplets" / "triplets.jsonl").read_bytes()
    again = _study(config)
    assert again.returncode == 0, again.stderr
    assert "[generate] adopted" in again.stderr and "[benchmark] cached" in again.stderr
    assert not stray.exists() and _study_litter(out) == []
    assert (out / "stages" / "triplets" / "triplets.jsonl").read_bytes() == before

    # Crash mid-generation under a new seed, then resume with a changed late setting: the parts are reused.
    partial = out / "stages" / "triplets.partial"
    assert _kill_when(_colmed("study", "--config", config, "--set", "seed=5"),
                      lambda: _done_parts(partial, "generate") >= 20, signal.SIGKILL)
    parts_before = {p.name: p.stat().st_mtime_ns for p in (partial / "_work" / "generate").glob("*.queries.jsonl")}
    late = _study(config, "--set", "seed=5", "--set", "data.negatives=1")
    assert late.returncode == 0, late.stderr
    ref_out = tmp_path / "reference"
    ref_config = _study_config(tmp_path, many_notes, sample_dataset_dir, ref_out)
    assert _study(ref_config, "--set", "seed=5", "--set", "data.negatives=1").returncode == 0
    _assert_same_outputs(out / "stages" / "triplets", ref_out / "stages" / "triplets")
    assert len(parts_before) >= 20


@pytest.mark.slow
def test_study_killed_while_training_resumes_the_training_stage_from_its_checkpoint(
        sample_dataset_dir, tiny_st_model_dir, tmp_path):
    """`kill -9` of the orchestrator alone once the bi-encoder stage saved checkpoint-2: the guard stops the stage
    (SIGTERM; it may be cut in the middle of its next checkpoint), and the re-run continues training from the
    newest complete checkpoint instead of starting over (the stage passes --resume with --overwrite)."""
    import yaml

    from colmed.bi_encoder.train import checkpoints

    out = tmp_path / "study"
    cfg = {"out": str(out),
           "data": {"notes": str(sample_dataset_dir), "num_notes": None, "generator": "inverse_cloze", "negatives": 2,
                    "dev_fraction": 0.2, "args": {"chunk-words": 30, "queries-per-note": 3}},
           "bi_encoder": {"base": tiny_st_model_dir, "args": {"max-steps": 6, "batch-size": 2, "eval-steps": 2,
                                                             "max-query-length": 16, "max-doc-length": 48}},
           "colbert": {"enabled": False},
           "benchmark": {"datasets": [str(sample_dataset_dir)], "data_dir": None, "baseline": "bm25"}}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(cfg))
    model = out / "stages" / "bi-encoder" / "model"
    ckpt = model.with_name("model.checkpoints")
    assert _kill_when(_colmed("study", "--config", config), lambda: (ckpt / "checkpoint-2" / "trainer_state.json")
                      .is_file(), signal.SIGKILL, timeout=600)
    deadline = time.time() + 30
    while time.time() < deadline and not _lock_is_free(model):
        time.sleep(0.2)
    assert _lock_is_free(model), "the training stage outlived the orchestrator"
    assert not model.exists()
    newest = checkpoints(ckpt)[0][-1]
    done = _study(config)
    assert done.returncode == 0, done.stderr
    log = (out / "stages" / "train-bi-encoder.log").read_text()
    assert f"resuming from {newest} (step {newest.name.split('-')[1]})" in log
    assert json.loads((model / "manifest.json").read_text())["resumed_from"] == newest.name
    assert _study_litter(out) == [] and not ckpt.exists()


# ------------------------------------------------------------------ index

@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory, sample_dataset_dir) -> Path:
    """The sample dataset with its corpus grown to 20,000 documents (distinct ids and texts), so a BM25 build
    lasts long enough to be killed mid-way."""
    import shutil

    ds = tmp_path_factory.mktemp("big") / "ds"
    shutil.copytree(sample_dataset_dir, ds)
    docs = [json.loads(line) for line in (ds / "corpus.jsonl").read_text().splitlines() if line.strip()]
    with open(ds / "corpus.jsonl", "a", encoding="utf-8") as f:
        for i in range(20_000 - len(docs)):
            d = docs[i % len(docs)]
            f.write(json.dumps({"_id": f"extra-{i}", "title": d["title"], "text": f"{d['text']} Copy {i}."}) + "\n")
    return ds


def _index_args(ds: Path, out: Path) -> list[str]:
    return _colmed("index", "--retriever", "bm25", "--dataset", ds, "--out", out)


def _building(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.glob(f".{name}.*.building") if p.is_dir()]


def test_index_killed_mid_build_leaves_nothing_and_the_rebuild_is_byte_identical(big_dataset, tmp_path):
    ref = tmp_path / "ref"
    assert subprocess.run(_index_args(big_dataset, ref), cwd=ROOT, env=ENV).returncode == 0
    out = tmp_path / "idx"
    points = [("SIGKILL once the temp folder exists", signal.SIGKILL, lambda: bool(_building(tmp_path, "idx"))),
              ("SIGTERM once docs.jsonl is written", signal.SIGTERM,
               lambda: any((b / "docs.jsonl").exists() for b in _building(tmp_path, "idx")))]
    killed = []
    for name, sig, ready in points:
        if _kill_when(_index_args(big_dataset, out), ready, sig):
            killed.append(name)
            assert not out.exists(), name
            left = set(_litter(tmp_path, "idx"))
            # SIGKILL leaves the dead writer's temp folder and lock (removed by the next run); SIGTERM nothing
            assert left == set() if sig == signal.SIGTERM else all(
                n == ".idx.lock" or n.endswith(".building") for n in left), (name, left)
    assert len(killed) == 2, f"the build finished before it could be killed: killed at {killed}"
    done = subprocess.run(_index_args(big_dataset, out), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "ref"], "litter beside the index"
    got, want = (json.loads((p / "manifest.json").read_text()) for p in (out, ref))
    assert got["files"] == want["files"] and got["num_docs"] == want["num_docs"] == 20_000  # sizes and sha256
    verify = subprocess.run(_colmed("index", "--verify", out), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
