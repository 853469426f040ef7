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
from colmed.stages import StageRunner
from colmed.study import (StudyConfig, apply_overrides, build_stages, restore_generate_stage, save_generate_stage,
                          stage_config_path, write_stage_configs)
from colmed.core.errors import InputError

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
    cfg = apply_overrides(StudyConfig(), ["data.num_notes=5", "colbert.enabled=false", "bi_encoder.args.lr=1e-4"])
    assert cfg.data.num_notes == 5 and not cfg.colbert.enabled and cfg.bi_encoder.args["lr"] == 1e-4
    assert cfg.colbert.args == StudyConfig().colbert.args  # a section's other keys keep their defaults
    assert [s.name for s in build_stages(cfg)] == ["generate", "train-bi-encoder", "benchmark"]
    with pytest.raises(InputError, match="field 'data.nope': unknown setting"):
        apply_overrides(cfg, ["data.nope=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  num_notes: 5\n  typo_key: 1\n")
    with pytest.raises(InputError, match=r"bad.yaml: field 'data.typo_key': unknown setting"):
        StudyConfig.from_yaml(bad)


@pytest.mark.parametrize("yaml_text, overrides, message", [
    ("benchmark:\n  datasets: nfcorpus\n", [], "field 'benchmark.datasets': expected a list of strings, got 'nfcorpus'"),
    ("data:\n  negatives: five\n", [], "field 'data.negatives': expected an integer, got 'five'"),
    ("seed: 13\n", ["data.negatives=five"], "field 'data.negatives': expected an integer, got 'five'"),
    ("colbert:\n  enabled: 'no'\n", [], "field 'colbert.enabled': expected true or false, got 'no'"),
])
def test_wrong_types_fail_at_load_naming_file_and_field(tmp_path, yaml_text, overrides, message):
    config = tmp_path / "study.yaml"
    config.write_text(yaml_text)
    with pytest.raises(InputError) as err:
        StudyConfig.from_yaml(config, overrides)
    assert str(err.value) == f"{config}: {message}"
    # The CLI stops before any stage: one line, exit code 2, nothing written.
    out = tmp_path / "study-out"
    r = CliRunner().invoke(main, ["study", "--config", str(config), "--out", str(out), "--dry-run",
                                  *sum((["--set", o] for o in overrides), [])])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_set_overrides_reach_the_stage_commands(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "s"), "data": {"negatives": 5}}))
    cfg = StudyConfig.from_yaml(config, ["data.negatives=3", "benchmark.datasets=[nfcorpus, scifact]"])
    assert cfg.data.negatives == 3 and cfg.benchmark.datasets == ["nfcorpus", "scifact"]
    stages = {s.name: s for s in build_stages(cfg)}
    gen = [str(a) for a in stages["generate"].command]
    assert gen[gen.index("--negatives") + 1] == "3"
    bench = [str(a) for a in stages["benchmark"].command]
    assert [bench[i + 1] for i, a in enumerate(bench) if a == "--dataset"] == ["nfcorpus", "scifact"]


def test_each_stage_runs_the_command_its_serialised_settings_build(tmp_path):
    """stage_config.json holds the typed settings; rebuilding them gives back exactly the stage's command."""
    from colmed.core.config import from_dict
    import colmed.study as study

    cfg = StudyConfig.from_dict({"out": str(tmp_path / "s"), "data": {"source": "labelled"},
                                 "colbert": {"args": {"maxsteps": 7}}})
    stages = build_stages(cfg)
    write_stage_configs(stages)
    for stage in stages:
        saved = json.loads(stage_config_path(stage).read_text())
        assert saved["stage"] == stage.name and saved["command"] == [str(a) for a in stage.command]
        rebuilt = from_dict(getattr(study, saved["kind"]), saved["settings"])
        assert rebuilt == stage.settings and rebuilt.argv() == stage.command
    colbert = json.loads(stage_config_path(stages[2]).read_text())
    assert colbert["kind"] == "TrainStageConfig" and colbert["settings"]["args"] == {"maxsteps": 7}
    assert colbert["settings"]["family"] == "colbert"


@pytest.mark.colbert
def test_tiny_study_end_to_end_then_resume_and_kill(tmp_path, tiny_st_model_dir, tiny_bert_dir, sample_dataset_dir,
                                                    scripted_server):
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
                        "## Train/test contamination", "### Contamination vs sample_medical", "## Benchmark",
                        "## Paired comparisons", "## Manifest"):
            assert section in report
        results = json.loads((out / "benchmark" / "results.json").read_text())
        assert set(results["scores"]) == {"bm25", "dense-base", "dense-trained", "colbert-base", "colbert-trained",
                                          "hybrid-dense", "hybrid-colbert"}  # BM25 fused (RRF) with each trained
        # Each family against its own base, and ColBERT against dense, beside the tests against BM25.
        assert set(next(iter(results["comparisons"].values()))) == {
            "dense-trained:dense-base", "colbert-trained:colbert-base", "colbert-trained:dense-trained"}
        assert all(v for v in results["scores"].values())
        manifest = json.loads((out / "manifest.json").read_text())
        from colmed.core.provenance import git_sha, sha256_file

        # Provenance: the same git sha as the checkout, versions, the notes' hash, the config, a time.
        assert manifest["git_sha"] == git_sha()
        assert manifest["versions"]["python"] and manifest["versions"]["colmed"]
        notes = yaml.safe_load(config.read_text())["data"]["notes"]
        assert manifest["inputs"] == {notes: sha256_file(notes)}
        assert manifest["config"]["data"]["negatives"] == 2 and manifest["created"]
        assert set(manifest["stages"]) == {"generate", "train-bi-encoder", "train-colbert", "benchmark"}
        markers = {p: p.read_text() for p in (out / "stages").glob("*.stage.json")}
        assert len(markers) == 3
        # Each stage ran exactly the command its serialised settings (stage_config.json) build.
        for stage in build_stages(StudyConfig.from_yaml(config)):
            ran = json.loads(StageRunner.marker(stage).read_text())["command"]
            assert json.loads(stage_config_path(stage).read_text())["command"] == ran

        # Re-running runs nothing: every stage is cached, no marker is rewritten, the tables are unchanged.
        r2 = runner.invoke(main, ["study", "--config", str(config)], catch_exceptions=False)
        assert r2.exit_code == 0 and r2.output.count("cached") == 4 and "running" not in r2.output
        assert {p: p.read_text() for p in markers} == markers
        assert json.loads((out / "benchmark" / "results.json").read_text())["scores"] == results["scores"]

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


def test_finished_study_rerun_with_other_negatives_reuses_the_generated_queries(tmp_path, scripted_server):
    """`--set data.negatives=3` after a finished study: the generate stage reruns without asking the LLM again
    (its server is gone by then): only mining and writing are redone; the training and benchmark stages are
    planned to rerun. The generate stage runs its real command; the later stages are marked done instead of
    run (their reruns on a key change are tested above), to keep this fast."""
    from colmed.data.triplets import read_triplets

    def plan(cfg):
        return {stage.name: status for stage, status in StageRunner(build_stages(cfg)).plan()}

    with scripted_server() as base_url:
        cfg = StudyConfig.from_dict({
            "out": str(tmp_path / "study"),
            "data": {"notes": str(write_notes(tmp_path / "notes.jsonl")), "num_notes": 20, "generator": "llm",
                     "backend": "openai", "model": "scripted", "negatives": 2, "dev_fraction": 0.2,
                     "args": {"base-url": base_url, "range-max": 10, "batch-notes": 5}},
            "colbert": {"enabled": False}})
        runner = StageRunner(build_stages(cfg))
        StageRunner([runner.by_name["generate"]]).run(echo=lambda m: None)
    for stage in runner.stages[1:]:  # the later stages, as if they had run on these triplets
        runner.marker(stage).write_text(json.dumps({"key": runner.key(stage)}))
    assert set(plan(cfg).values()) == {"cached"}
    triplets = tmp_path / "study" / "stages" / "triplets"
    queries = {r.query_id: r.query for r in read_triplets(triplets)}
    assert queries and max(len(r.negative_ids) for r in read_triplets(triplets)) == 2

    late = apply_overrides(cfg, ["data.negatives=3"])
    assert plan(late) == {"generate": "to run", "train-bi-encoder": "to run", "benchmark": "to run"}
    generate = StageRunner(build_stages(late)).by_name["generate"]
    said: list[str] = []
    StageRunner([generate]).run(echo=said.append)
    assert said[-1].startswith("[generate] done")
    manifest = json.loads((triplets / "manifest.json").read_text())
    assert manifest["generation"]["reused"] is True and manifest["config"]["num_negatives"] == 3
    assert "reused the generated queries" in (triplets.parent / "generate.log").read_text()
    records = list(read_triplets(triplets))
    assert {r.query_id: r.query for r in records} == queries and max(len(r.negative_ids) for r in records) == 3
    assert plan(late) == {"generate": "cached", "train-bi-encoder": "to run", "benchmark": "to run"}
    assert sorted(p.name for p in triplets.parent.iterdir() if p.name.endswith((".partial", ".started"))) == []


def test_a_kept_output_is_adopted_only_once_the_current_keys_run_replaced_it(tmp_path):
    """A stage keeping its output across key changes (generate: its command decides what to reuse) is stopped
    under a new key before replacing the old output: the re-run runs it instead of adopting the old key's
    output; stopped after replacing it (the marker never written), the output is adopted."""
    from colmed.core.errors import ColmedError
    from colmed.stages import Stage

    out, fail = tmp_path / "stages" / "triplets", tmp_path / "fail"

    def stage(value: int) -> Stage:
        code = (f"import json, pathlib, sys\nif pathlib.Path({str(fail)!r}).exists(): sys.exit(1)\n"
                f"out = pathlib.Path({str(out)!r}); out.mkdir(parents=True, exist_ok=True)\n"
                f"(out / 'manifest.json').write_text(json.dumps({{'kind': 'colmed-triplets', 'value': {value}}}))")
        return Stage("generate", [sys.executable, "-c", code], out, clean_on_change=False, output=out,
                     output_kind="triplets")

    def run(value: int) -> list[str]:
        said: list[str] = []
        StageRunner([stage(value)]).run(echo=said.append)
        return said

    def value() -> int:
        return json.loads((out / "manifest.json").read_text())["value"]

    run(1)
    fail.touch()  # key 2's run stops before its command replaced the output (a crash would too)
    with pytest.raises(ColmedError, match="failed"):
        run(2)
    started = StageRunner.marker(stage(2)).with_suffix(".started")
    as_started = started.read_text()
    assert value() == 1 and json.loads(as_started)["key"] == StageRunner([stage(2)]).key(stage(2))
    fail.unlink()
    said = run(2)
    assert [line.split(":")[0].split(" in ")[0] for line in said] == ["[generate] running", "[generate] done"]
    assert value() == 2
    # The orchestrator died after the command replaced the output, before writing the marker.
    StageRunner.marker(stage(2)).unlink()
    started.write_text(as_started)
    said = run(2)
    assert said[0].startswith("[generate] adopted") and len(said) == 1 and value() == 2 and not started.exists()


def test_stages_run_by_another_path_to_the_same_python_stay_done(tmp_path, monkeypatch):
    """``bin/python`` and ``bin/python3.11`` are one interpreter: a study run by one and continued by the other
    (an entry-point script reinstalled with another shebang) keeps its finished stages and resumes an unfinished
    one in place; a different interpreter re-runs them."""
    import shutil
    from colmed.stages import Stage

    real = os.path.realpath(sys.executable)
    alias = tmp_path / "bin" / "python"
    alias.parent.mkdir()
    alias.symlink_to(real)
    out = tmp_path / "stages"

    def stages() -> list[Stage]:
        write = "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); " \
                "(p / 'done').write_text('x')"
        return [Stage("generate", [sys.executable, "-c", write, str(out / "triplets")], out / "triplets",
                      clean_on_change=False),
                Stage("train", [sys.executable, "-c", write, str(out / "model")], out / "model", after=["generate"])]

    monkeypatch.setattr(sys, "executable", str(alias))
    StageRunner(stages()).run(echo=lambda m: None)
    # The train stage's later run under the alias was killed mid-way: its partial output is there to resume.
    train_marker = StageRunner.marker(stages()[1])
    started = json.loads(train_marker.read_text())
    train_marker.unlink()
    train_marker.with_suffix(".started").write_text(json.dumps({"key": started["key"], "command": started["command"],
                                                                 "output_before": None}))
    (out / "model" / "checkpoint").write_text("step 29")

    monkeypatch.setattr(sys, "executable", real)
    runner = StageRunner(stages())
    assert [status for _, status in runner.plan()] == ["cached", "to run"]
    said: list[str] = []
    runner.run(echo=said.append)
    assert said[0] == f"[generate] cached ({runner.key(runner.stages[0])})"
    assert (out / "model" / "checkpoint").read_text() == "step 29"  # resumed in place, not wiped

    other = tmp_path / "other" / "python"  # another binary (a copy): not the same interpreter
    other.parent.mkdir()
    shutil.copy2(real, other)
    monkeypatch.setattr(sys, "executable", str(other))
    assert [status for _, status in StageRunner(stages()).plan()] == ["to run", "to run"]


@pytest.mark.parametrize("config", ["bench/study_reference.yaml", "bench/study_gpu.yaml",
                                    "bench/study_one_trainer.yaml", "bench/study_sources.yaml"])
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
    import shutil

    notes = write_notes(tmp_path / "notes.jsonl", n=3)
    main_dir, published = tmp_path / "main", tmp_path / "published"
    cfg = StudyConfig.from_dict({"out": str(main_dir), "data": {"notes": str(notes), "num_notes": 3}})

    def generate_stage():
        runner = StageRunner(build_stages(cfg))
        return runner, runner.by_name["generate"]

    with pytest.raises(InputError, match="has not finished"):
        save_generate_stage(cfg, published)
    # A finished generate stage, as `colmed study` leaves it.
    runner, stage = generate_stage()
    (Path(stage.out_dir) / "train").mkdir(parents=True)
    (Path(stage.out_dir) / "train" / "triplets.jsonl").write_text('{"query": "q"}\n')
    runner.marker(stage).write_text(json.dumps({"key": runner.key(stage), "command": stage.command}))
    save_generate_stage(cfg, published)

    shutil.rmtree(main_dir)
    assert "restored" in restore_generate_stage(cfg, published)
    runner, stage = generate_stage()
    assert runner.is_done(stage)
    assert (Path(stage.out_dir) / "train" / "triplets.jsonl").read_text() == '{"query": "q"}\n'
    assert "already done" in restore_generate_stage(cfg, published)

    # Another command (more negatives): not the stage that made them, so nothing is put in place.
    shutil.rmtree(main_dir)
    assert "not restored" in restore_generate_stage(apply_overrides(cfg, ["data.negatives=3"]), published)
    assert not main_dir.exists()
    # Other notes: the published triplets are not theirs either.
    write_notes(notes, n=4)
    assert "not restored" in restore_generate_stage(cfg, published)
    assert not main_dir.exists()


def test_until_stops_after_the_named_stage_and_a_later_run_continues(tmp_path, sample_dataset_dir):
    """`colmed study --until generate` runs the data stage only (e.g. on a CPU machine); the plan then shows it
    cached and the rest to run. A stage name that does not exist is refused before anything is written."""
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "study"),
        "data": {"source": "labelled", "labelled_dataset": str(sample_dataset_dir), "labelled_split": "test",
                 "negatives": 1},
        "benchmark": {"datasets": [str(sample_dataset_dir)], "data_dir": None}}))
    runner = CliRunner()
    bad = runner.invoke(main, ["study", "--config", str(config), "--until", "train"])
    assert bad.exit_code == 2 and "until" in bad.output and not (tmp_path / "study").exists()
    r = runner.invoke(main, ["study", "--config", str(config), "--until", "generate"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "[generate] running" in r.output and "train-bi-encoder" not in r.output
    stages = tmp_path / "study" / "stages"
    assert (stages / "triplets.stage.json").is_file() and not (stages / "bi-encoder").exists()
    # The default contamination check ran against the study's benchmark set.
    assert "Contamination vs sample_medical" in (stages / "triplets" / "contamination.md").read_text()
    assert "| train-colbert | not run |" in (tmp_path / "study" / "report.md").read_text()
    dry = runner.invoke(main, ["study", "--config", str(config), "--dry-run"])
    status = {line.split()[0]: line.split()[1] for line in dry.output.splitlines() if line.strip()}
    assert status == {"generate": "cached", "train-bi-encoder": "to", "train-colbert": "to", "benchmark": "to"}
