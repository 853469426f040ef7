"""Fast checks of how triplets become colbert-ai training data and how settings are read (no colbert-ai)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from colmed.cli import main
from colmed.colbert.training import ColbertTrainingConfig, prepare_triplets, read_triplet_records
from colmed.core.errors import InputError


def _record(i: int, negatives: int = 2, **over) -> dict:
    rec = {"query_id": f"q{i}", "query": f"question {i}", "positive_id": f"p{i}", "positive": f"passage {i}",
           "negative_ids": [f"n{i}-{j}" for j in range(negatives)],
           "negatives": [f"negative {i} {j}" for j in range(negatives)]}
    rec.update(over)
    return rec


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _prepare(path: Path, **config):
    triplets_path, records = read_triplet_records(path)
    return prepare_triplets(triplets_path, records, ColbertTrainingConfig(base_model="x", batch_size=2, **config))


def test_auto_nway_uses_smallest_negative_count_and_ids_become_positions(tmp_path):
    path = _write(tmp_path / "t.jsonl", [_record(0, 3), _record(1, 2), _record(2, 2, query_id="q0", query="question 0")])
    prepared = _prepare(path)
    assert prepared.nway == 3
    # Every example is [qid, positive pid, negative pids...] indexing the in-memory queries and collection.
    for qid, pos, *negs in prepared.examples:
        assert len(negs) == 2
        assert prepared.collection[pos].startswith("passage")
        assert all(prepared.collection[n].startswith("negative") for n in negs)
    assert prepared.queries[prepared.examples[0][0]] == "question 0"
    assert prepared.examples[0][0] == prepared.examples[2][0]  # same query id -> same qid


def test_records_with_too_few_negatives_or_other_split_are_dropped_and_counted(tmp_path):
    path = _write(tmp_path / "t.jsonl", [_record(0, 3), _record(1, 3), _record(2, 1), _record(3, 3, split="dev")])
    prepared = _prepare(path, nway=3)
    assert prepared.counts == {"records": 4, "other_split": 1, "too_few_negatives": 1, "examples": 2,
                               "queries": 2, "passages": 8}


def test_same_passage_id_with_different_text_names_the_line(tmp_path):
    path = _write(tmp_path / "t.jsonl", [_record(0), _record(1, positive_id="p0", positive="something else")])
    with pytest.raises(InputError, match=r"t\.jsonl:2: field 'positive'"):
        _prepare(path)


def test_distill_requires_teacher_scores_and_pairs_them_with_pids(tmp_path):
    path = _write(tmp_path / "t.jsonl", [_record(0, teacher_scores=[3.0, 1.0, 0.5]), _record(1)])
    with pytest.raises(InputError, match=r"t\.jsonl:2: field 'teacher_scores'"):
        _prepare(path, distill=True)
    path = _write(tmp_path / "t.jsonl", [_record(i, teacher_scores=[3.0, 1.0, 0.5]) for i in range(2)])
    example = _prepare(path, distill=True).examples[0]
    assert [score for _, score in example[1:]] == [3.0, 1.0, 0.5]


def test_no_negatives_or_less_than_one_batch_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no record has hard negatives"):
        _prepare(_write(tmp_path / "a.jsonl", [_record(0, 0), _record(1, 0)]))
    with pytest.raises(InputError, match="fewer than one batch"):
        triplets_path, records = read_triplet_records(_write(tmp_path / "b.jsonl", [_record(0)]))
        prepare_triplets(triplets_path, records, ColbertTrainingConfig(base_model="x", batch_size=4))


def test_malformed_triplet_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_record(0)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.jsonl:2: malformed JSON"):
        read_triplet_records(path)


def test_yaml_config_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: some/model\nbatch_size: 8\nlearning_rate: 3e-5\nmax_steps: 40\n", encoding="utf-8")
    config = ColbertTrainingConfig.from_yaml(cfg, {"batch_size": 4})
    assert (config.base_model, config.batch_size, config.learning_rate, config.max_steps) == ("some/model", 4, 3e-5, 40)
    config = ColbertTrainingConfig.from_yaml(cfg, ["warmup_ratio=0.25", "dim=null"])
    assert config.warmup_ratio == 0.25 and config.dim is None
    # colbert-ai's own names are not config keys: the error lists the shared vocabulary.
    cfg.write_text("bsize: 8\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.yaml: field 'bsize': unknown setting; known: .*batch_size"):
        ColbertTrainingConfig.from_yaml(cfg)
    cfg.write_text("max_steps: five\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.yaml: field 'max_steps': expected an integer, got 'five'"):
        ColbertTrainingConfig.from_yaml(cfg)
    cfg.write_text("distill: 'no'\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.yaml: field 'distill': expected true or false, got 'no'"):
        ColbertTrainingConfig.from_yaml(cfg)
    cfg.write_text("max_query_length: 2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.yaml: field 'max_query_length': must be >= 4"):
        ColbertTrainingConfig.from_yaml(cfg)


def test_shared_vocabulary_maps_to_colbert_ai_names():
    from colmed.colbert.training import colbert_settings

    config = ColbertTrainingConfig(base_model="m", batch_size=16, learning_rate=3e-5, max_steps=200,
                                   warmup_ratio=0.1, max_doc_length=96, max_query_length=24)
    settings = colbert_settings(config, nway=3)
    assert {k: settings[k] for k in ("bsize", "lr", "maxsteps", "warmup", "doc_maxlen", "query_maxlen", "nway")} == \
        {"bsize": 16, "lr": 3e-5, "maxsteps": 200, "warmup": 20, "doc_maxlen": 96, "query_maxlen": 24, "nway": 3}
    assert colbert_settings(ColbertTrainingConfig(base_model="m"), nway=2)["warmup"] is None
    # max_steps -1 trains for `epochs` passes: 2.5 epochs of 10 examples in batches of 4 -> 7 steps.
    assert ColbertTrainingConfig(base_model="m", max_steps=-1, epochs=2.5, batch_size=4).total_steps(10) == 7


def test_train_cli_refuses_to_overwrite_before_doing_any_work(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("finished", encoding="utf-8")
    triplets = _write(tmp_path / "t.jsonl", [_record(i) for i in range(4)])
    result = CliRunner().invoke(main, ["train", "colbert", "--triplets", str(triplets), "--base", "unused",
                                       "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert (out / "keep.txt").read_text(encoding="utf-8") == "finished"


def test_train_cli_rejects_bad_settings_with_the_field(tmp_path):
    triplets = _write(tmp_path / "t.jsonl", [_record(i) for i in range(4)])
    base = ["train", "colbert", "--triplets", str(triplets), "--base", "m", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*base, "--nway", "1"])
    assert result.exit_code == 2
    assert "error: field 'nway': must be >= 2" in result.output
    # colbert-ai's flag spellings still reach the shared names.
    result = CliRunner().invoke(main, [*base, "--bsize", "0"])
    assert result.exit_code == 2 and "field 'batch_size': must be >= 1" in result.output
    result = CliRunner().invoke(main, [*base, "--maxsteps", "0"])
    assert result.exit_code == 2 and "field 'max_steps': must be >= 1" in result.output
    # The old --warmup counted steps: 12 of 10 steps is a ratio above 1, refused by the shared check.
    result = CliRunner().invoke(main, [*base, "--maxsteps", "10", "--warmup", "12"])
    assert result.exit_code == 2 and "field 'warmup_ratio': must be in [0, 1), got 1.2" in result.output
    result = CliRunner().invoke(main, [*base, "--bsize", "4", "--batch-size", "8"])
    assert result.exit_code == 2 and "--bsize 4 contradicts --batch-size 8" in result.output
    result = CliRunner().invoke(main, ["train", "colbert", "--triplets", str(triplets), "--base", "m"])
    assert result.exit_code == 2 and "field 'out': required" in result.output
    assert not (tmp_path / "o").exists()
