"""The whole study on a tiny config: notes -> LLM queries (OpenAI-compatible server on 127.0.0.1) ->
both families trained from tiny random models -> benchmark -> report; then resume and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from colmed.cli import main
from colmed.study import StudyConfig, apply_overrides, build_stages
from colmed.core.errors import InputError
from tests.test_data_gen_llm import scripted_server

TOPICS = ["hypertension on lisinopril with a dry cough", "type 2 diabetes started on metformin 500 mg",
          "asthma exacerbation treated with albuterol and prednisone", "atrial fibrillation on apixaban",
          "community-acquired pneumonia treated with amoxicillin", "migraine with aura, started sumatriptan",
          "hypothyroidism, levothyroxine dose increased", "major depression, sertraline 50 mg daily",
          "urinary tract infection, nitrofurantoin for five days", "deep vein thrombosis of the left calf"]


def write_notes(path: Path, n: int = 20) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            text = (f"HISTORY: The patient is a {40 + i}-year-old seen today for {topic}. "
                    f"The symptoms began {i + 2} days ago and have been getting worse despite rest at home. "
                    f"ASSESSMENT AND PLAN: We discussed {topic} in detail and agreed on follow-up in {i + 1} weeks. "
                    f"Laboratory tests were ordered and the patient was counselled on warning signs.")
            f.write(json.dumps({"id": f"note-{i}", "title": topic, "text": text}) + "\n")
    return path


def tiny_config(tmp_path, tiny_st_model_dir, tiny_bert_dir, sample_dataset_dir, base_url) -> Path:
    tiny_bert = tiny_bert_dir
    cfg = {
        "out": str(tmp_path / "study"),
        "data": {"source": "notes", "notes": str(write_notes(tmp_path / "notes.jsonl")), "num_notes": 20,
                 "generator": "llm", "backend": "openai", "model": "scripted", "negatives": 2,
                 "dev_fraction": 0.2, "args": {"base-url": base_url, "range-max": 10}},
        "bi_encoder": {"base": tiny_st_model_dir, "args": {"max-steps": 2, "batch-size": 4}},
        "colbert": {"base": tiny_bert, "args": {"maxsteps": 2, "bsize": 4, "doc-maxlen": 64, "dim": 16}},
        "benchmark": {"datasets": [str(sample_dataset_dir)], "data_dir": None, "baseline": "bm25"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_overrides_and_errors(tmp_path):
    cfg = apply_overrides(StudyConfig(), ["data.num_notes=5", "colbert.enabled=false", "colmed.bi_encoder.args.lr=1e-4"])
    assert cfg.data.num_notes == 5 and not cfg.colbert.enabled and cfg.bi_encoder.args["lr"] == 1e-4
    assert [s.name for s in build_stages(cfg)] == ["generate", "train-bi-encoder", "benchmark"]
    with pytest.raises(InputError, match="unknown setting 'data.nope'"):
        apply_overrides(cfg, ["data.nope=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  num_notes: 5\n  typo_key: 1\n")
    with pytest.raises(InputError, match=r"bad.yaml: field 'data.typo_key': unknown setting"):
        StudyConfig.from_yaml(bad)


@pytest.mark.colbert
def test_tiny_study_end_to_end_then_resume_and_kill(tmp_path, tiny_st_model_dir, tiny_bert_dir, sample_dataset_dir):
    with scripted_server() as base_url:
        config = tiny_config(tmp_path, tiny_st_model_dir, tiny_bert_dir, sample_dataset_dir, base_url)
        runner = CliRunner()
        dry = runner.invoke(main, ["study", "--config", str(config), "--dry-run"], catch_exceptions=False)
        assert dry.exit_code == 0 and dry.output.count("to run") == 4
        r = runner.invoke(main, ["study", "--config", str(config)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out = tmp_path / "study"
        report = (out / "report.md").read_text()
        for section in ("## Plan and timings", "## Training data", "### Ten sample queries", "## Training",
                        "## Benchmark", "## Manifest"):
            assert section in report
        results = json.loads((out / "benchmark" / "results.json").read_text())
        assert set(results["scores"]) == {"bm25", "dense-base", "dense-trained", "colbert-base", "colbert-trained"}
        assert all(v for v in results["scores"].values())
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["git_sha"] is None or len(manifest["git_sha"]) >= 40
        assert set(manifest["stages"]) == {"generate", "train-bi-encoder", "train-colbert", "benchmark"}

        # Re-running finishes at once: every stage is cached, and the benchmark tables are unchanged.
        t0 = time.perf_counter()
        r2 = runner.invoke(main, ["study", "--config", str(config)], catch_exceptions=False)
        assert r2.exit_code == 0 and r2.output.count("cached") == 4
        assert json.loads((out / "benchmark" / "results.json").read_text())["scores"] == results["scores"]
        assert time.perf_counter() - t0 < 60

        # Changing a late setting re-runs only what depends on it.
        dry = runner.invoke(main, ["study", "--config", str(config), "--set", "colbert.args.maxsteps=3", "--dry-run"])
        status = {line.split()[0]: line.split()[1] for line in dry.output.splitlines() if line.strip()}
        assert status == {"generate": "cached", "train-bi-encoder": "cached", "train-colbert": "to",
                          "benchmark": "to"}

        # kill -9 during the run: finished stages survive, the killed one is redone.
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "colmed.cli", "study", "--config", str(config),
                                 "--set", "colbert.args.maxsteps=3"], env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if line.startswith("[train-colbert] running"):
                break
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        dry = runner.invoke(main, ["study", "--config", str(config), "--set", "colbert.args.maxsteps=3", "--dry-run"])
        status = {line.split()[0]: line.split()[1] for line in dry.output.splitlines() if line.strip()}
        assert status["generate"] == "cached" and status["train-bi-encoder"] == "cached"
        assert status["train-colbert"] == "to"


@pytest.mark.parametrize("config", ["bench/study_reference.yaml", "bench/study_gpu.yaml"])
def test_shipped_study_configs_plan_commands_their_cli_accepts(config):
    """Every flag a shipped study config passes to a stage is a real option with a valid value."""
    import click

    root = Path(__file__).resolve().parents[1]
    cfg = StudyConfig.from_yaml(root / config)
    stages = build_stages(cfg)
    assert [s.name for s in stages] == ["generate", "train-bi-encoder", "train-colbert", "benchmark"]
    for stage in stages:
        args = [str(a) for a in stage.command]
        args = args[args.index("colmed.cli") + 1:]
        ctx = main.make_context("colmed", list(args), resilient_parsing=False)
        with ctx:
            name, cmd, rest = main.resolve_command(ctx, args)
            while isinstance(cmd, click.Group):
                sub_ctx = cmd.make_context(name, rest, parent=ctx)
                name, cmd, rest = cmd.resolve_command(sub_ctx, rest)
            cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or a bad value


def test_published_generate_stage_is_restored_only_for_the_stage_that_made_it(tmp_path):
    """bench/study_reference.py --generated: a study reruns without its LLM only from matching triplets."""
    import importlib.util
    import shutil

    script = Path(__file__).parent.parent / "bench" / "study_reference.py"
    spec = importlib.util.spec_from_file_location("study_reference", script)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    notes = write_notes(tmp_path / "notes.jsonl", n=3)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"data": {"notes": str(notes), "num_notes": 3}}))
    main_dir, published = tmp_path / "main", tmp_path / "published"

    # A finished generate stage, as `colmed study` leaves it.
    runner, stage = ref._generate_stage(str(config), main_dir)
    (Path(stage.out_dir) / "train").mkdir(parents=True)
    (Path(stage.out_dir) / "train" / "triplets.jsonl").write_text('{"query": "q"}\n')
    runner.marker(stage).write_text(json.dumps({"key": runner.key(stage), "command": stage.command}))
    ref.save_generated(str(config), main_dir, published)

    shutil.rmtree(main_dir)
    assert "restored" in ref.restore_generated(published, str(config), main_dir)
    runner, stage = ref._generate_stage(str(config), main_dir)
    assert runner.is_done(stage)
    assert (Path(stage.out_dir) / "train" / "triplets.jsonl").read_text() == '{"query": "q"}\n'
    assert "already done" in ref.restore_generated(published, str(config), main_dir)

    # Other notes: the published triplets are not theirs, so nothing is put in place.
    shutil.rmtree(main_dir)
    write_notes(notes, n=4)
    assert "not restored" in ref.restore_generated(published, str(config), main_dir)
    assert not main_dir.exists()
