"""Outputs under misuse and crashes (issue #16): ``--overwrite`` replaces only colmed's own outputs, one
writer per output, a killed writer's temp folders are cleaned by the next run, outputs follow the umask,
and local model paths are stored absolute.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from colmed.core.errors import IndexExistsError, InputError, OutputBusyError
from colmed.core.io import atomic_directory, output_lock

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def colmed(*args, cwd=None, umask: int | None = None) -> subprocess.CompletedProcess:
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "colmed.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300, preexec_fn=preexec)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def litter(parent: Path, name: str) -> list[str]:
    """Hidden entries beside ``parent/name`` that name it: temp folders, the writer lock."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# A writer that enters atomic_directory, writes one file, says so, and waits to be released or killed.
HOLDER = textwrap.dedent("""
    import sys, time, pathlib
    from colmed.core.io import atomic_directory
    out, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    with atomic_directory(out, kind="index") as tmp:
        (tmp / "manifest.json").write_text('{"kind": "bm25", "by": "holder"}')
        print("ready", flush=True)
        while not release.exists():
            time.sleep(0.05)
""")


def start_holder(out: Path, release: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(release)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_writer_is_refused_naming_the_holder(tmp_path, sample_dataset_dir):
    out, release = tmp_path / "idx", tmp_path / "release"
    holder = start_holder(out, release)
    try:
        second = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out)
        assert second.returncode == 2, second.stderr
        line = error_line(second)
        assert f"pid {holder.pid}" in line and "idx" in line
    finally:
        release.touch()
        assert holder.wait(timeout=60) == 0
    # The first writer finished undisturbed: its output is the one in place.
    assert json.loads((out / "manifest.json").read_text())["by"] == "holder"
    assert litter(tmp_path, "idx") == []


def test_racing_writers_exactly_one_wins(tmp_path, sample_dataset_dir):
    """Three `colmed index` processes started together on one --out: one writes it, the others are refused
    (busy, or already exists once the winner is done); never two outputs swapped over each other."""
    out = tmp_path / "idx"
    argv = [sys.executable, "-m", "colmed.cli", "index", "--retriever", "bm25", "--dataset",
            str(sample_dataset_dir), "--out", str(out)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2, 2], results
    for rc, err in results:
        if rc == 2:
            line = [x for x in err.splitlines() if x.startswith("error:")]
            assert len(line) == 1 and ("another colmed process (pid" in line[0] or "already exists" in line[0])
    assert json.loads((out / "manifest.json").read_text())["kind"] == "bm25"
    assert litter(tmp_path, "idx") == []


def test_lock_refuses_in_process_and_is_free_after(tmp_path):
    out = tmp_path / "idx"
    with output_lock(out):
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            with atomic_directory(out, kind="index"):
                pass
    with atomic_directory(out, kind="index") as tmp:
        (tmp / "manifest.json").write_text('{"kind": "bm25"}')
    assert out.is_dir()


def test_killed_writer_litter_is_removed_by_next_run(tmp_path, sample_dataset_dir):
    out, release = tmp_path / "idx", tmp_path / "release"
    holder = start_holder(out, release)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    left = litter(tmp_path, "idx")
    # its temp folder, and its lock file naming it (the OS lock itself died with the process)
    assert len(left) == 2 and ".idx.lock" in left and any(n.endswith(".building") for n in left), left
    (tmp_path / ".idx.notes").mkdir()  # not a colmed temp name: must survive
    result = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    assert litter(tmp_path, "idx") == [".idx.notes"]
    assert json.loads((out / "manifest.json").read_text())["kind"] == "bm25"


def test_kill_between_the_two_renames_puts_the_previous_output_back(tmp_path, sample_dataset_dir):
    out = tmp_path / "idx"
    assert colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # What a writer killed after moving the finished index aside, before renaming the new one in, leaves:
    out.rename(tmp_path / ".idx.old-99999")
    (tmp_path / ".idx.99999-abcd_123.building").mkdir()
    again = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out)
    assert again.returncode == 2 and "already exists" in error_line(again)  # the previous index is back
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert litter(tmp_path, "idx") == []
    replaced = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr


def test_overwrite_replaces_a_colmed_index_and_leaves_no_litter(tmp_path, sample_dataset_dir):
    out = tmp_path / "idx"
    assert colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out).returncode == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    again = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out)
    assert again.returncode == 2 and "already exists" in error_line(again)
    replaced = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert (out / "manifest.json").is_file() and first
    assert litter(tmp_path, "idx") == []
    assert colmed("index", "--verify", out).returncode == 0


def test_library_overwrite_never_deletes_a_foreign_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep")
    with pytest.raises(InputError, match="did not write"):
        with atomic_directory(mine, overwrite=True, kind="model"):
            pass
    # A folder that became foreign while the new output was being built is still refused, not deleted.
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"kind": "colmed-bi-encoder"}')
    with pytest.raises(InputError, match="did not write"):
        with atomic_directory(out, overwrite=True, kind="model") as tmp:
            (tmp / "manifest.json").write_text('{"kind": "colmed-bi-encoder"}')
            (out / "manifest.json").unlink()
            (out / "thesis.txt").write_text("keep")
    assert (mine / "thesis.txt").read_text() == "keep" and (out / "thesis.txt").read_text() == "keep"
    assert litter(tmp_path, "out") == []
    with pytest.raises(IndexExistsError):
        with atomic_directory(mine, kind="model"):
            pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty, overwrite=True, kind="model") as tmp:  # nothing to lose in an empty folder
        (tmp / "manifest.json").write_text('{"kind": "colbert-checkpoint"}')
    assert (empty / "manifest.json").is_file()


@pytest.mark.parametrize("umask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_outputs_follow_the_umask(tmp_path, sample_dataset_dir, umask, dir_mode, file_mode):
    out = tmp_path / "idx"
    result = colmed("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", out, umask=umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    for name in ("manifest.json", "docs.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == file_mode, name


def test_relative_local_model_is_stored_absolute(tmp_path, sample_dataset_dir, tiny_st_model_dir, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from colmed.cli import main

    work = tmp_path / "project"
    shutil.copytree(tiny_st_model_dir, work / "models" / "tiny")
    monkeypatch.chdir(work)
    built = CliRunner().invoke(main, ["index", "--retriever", "dense", "--dataset", str(sample_dataset_dir),
                                      "--model", "models/tiny", "--out", "idx", "--device", "cpu"],
                               catch_exceptions=False)
    assert built.exit_code == 0, built.output
    model = json.loads((work / "idx" / "manifest.json").read_text())["model"]
    assert model == str((work / "models" / "tiny").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # from another folder, "models/tiny" would have been a hub repo name
    found = CliRunner().invoke(main, ["search", "--index", str(work / "idx"), "--query", "fever", "--k", "3",
                                      "--device", "cpu"], catch_exceptions=False)
    assert found.exit_code == 0, found.output
    assert len([line for line in found.stdout.splitlines() if line.strip()]) == 3


# ------------------------------------------------------------------ generate --overwrite reuses the generation

class _CountingGenerator:
    """The LLM-free inverse_cloze generator, counting its calls (one per batch of notes)."""

    def __init__(self, cfg):
        from colmed.data_gen.generators import make_generator

        self.inner, self.calls = make_generator(cfg, None), 0

    def generate(self, passages):
        self.calls += 1
        return self.inner.generate(passages)


def _generate(notes, out, **settings) -> tuple[dict, int]:
    """Run ``colmed generate``'s pipeline (40 notes in 5 batches); returns its manifest and the generator's calls."""
    from colmed.data_gen.config import GenerateConfig
    from colmed.data_gen.pipeline import TripletPipeline

    cfg = GenerateConfig(**{"notes": str(notes), "out": str(out), "chunk_words": 60, "min_chunk_words": 10,
                            "num_negatives": 2, "range_max": 10, "dev_fraction": 0.25, "batch_notes": 8,
                            "progress": False, **settings})
    counting = _CountingGenerator(cfg)
    return TripletPipeline(cfg, generator=counting).run(), counting.calls


def test_overwrite_with_other_negatives_reuses_the_finished_generation(tmp_path, sample_dataset_dir):
    """A finished output rerun with a late setting changed (here --negatives): the queries are not generated
    again (with an LLM, hours), only mining and writing are redone; the result equals a fresh run."""
    from colmed.data.triplets import read_triplets

    out = tmp_path / "triplets"
    first, calls = _generate(sample_dataset_dir, out)
    assert calls == 5 and first["generation"]["parts"] == 5 and first["generation"]["reused"] is False
    parts = {p.name: p.read_bytes() for p in (out / "generation").iterdir()}
    queries = {r.query_id: r.query for r in read_triplets(out)}
    assert max(len(r.negative_ids) for r in read_triplets(out)) == 2

    with pytest.raises(IndexExistsError):  # still only with --overwrite
        _generate(sample_dataset_dir, out, num_negatives=4)
    again, calls = _generate(sample_dataset_dir, out, num_negatives=4, overwrite=True)
    assert calls == 0 and again["generation"]["reused"] is True
    assert again["generation"]["fingerprint"] == first["generation"]["fingerprint"]
    records = list(read_triplets(out))
    assert {r.query_id: r.query for r in records} == queries
    assert max(len(r.negative_ids) for r in records) == 4
    assert {p.name: p.read_bytes() for p in (out / "generation").iterdir()} == parts
    _generate(sample_dataset_dir, tmp_path / "fresh", num_negatives=4)
    for name in ("triplets.jsonl", "train/triplets.jsonl", "dev/triplets.jsonl", "rejects.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "triplets"]  # no .partial, temp or lock


@pytest.mark.parametrize("change", ["seed", "queries_per_note", "notes"])
def test_overwrite_with_another_generation_setting_or_other_notes_regenerates(tmp_path, sample_dataset_dir, change):
    import shutil

    notes = tmp_path / "notes"
    shutil.copytree(sample_dataset_dir, notes)
    out = tmp_path / "triplets"
    first, _ = _generate(notes, out)
    settings = {"seed": {"seed": 5}, "queries_per_note": {"queries_per_note": 2}, "notes": {}}[change]
    if change == "notes":  # same path, one note edited: its fingerprint is the same, its sha256 is not
        corpus = notes / "corpus.jsonl"
        lines = corpus.read_text().splitlines()
        doc = json.loads(lines[0])
        lines[0] = json.dumps({**doc, "text": doc["text"] + " The patient was seen again a week later."})
        corpus.write_text("\n".join(lines) + "\n")
    again, calls = _generate(notes, out, overwrite=True, **settings)
    assert calls == 5 and again["generation"]["reused"] is False
    assert (again["generation"]["fingerprint"] == first["generation"]["fingerprint"]) == (change == "notes")
    assert again["input"]["sha256"] != first["input"]["sha256"] or change != "notes"
