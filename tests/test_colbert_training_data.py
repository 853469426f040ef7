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
    return prepare_triplets(triplets_path, records, ColbertTrainingConfig(base="x", bsize=2, **config))


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
        prepare_triplets(triplets_path, records, ColbertTrainingConfig(base="x", bsize=4))


def test_malformed_triplet_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_record(0)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.jsonl:2: malformed JSON"):
        read_triplet_records(path)


def test_yaml_config_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base: some/model\nbsize: 8\nlr: 3.0e-5\n", encoding="utf-8")
    config = ColbertTrainingConfig.from_yaml(cfg).merged(bsize=4, lr=None)
    assert (config.base, config.bsize, config.lr) == ("some/model", 4, 3e-5)
    cfg.write_text("bsize: 8\nlearning_rate: 1\n", encoding="utf-8")
    with pytest.raises(InputError, match="field 'learning_rate'"):
        ColbertTrainingConfig.from_yaml(cfg)


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
    result = CliRunner().invoke(main, ["train", "colbert", "--triplets", str(triplets), "--base", "m",
                                       "--out", str(tmp_path / "o"), "--nway", "1"])
    assert result.exit_code == 2
    assert "error: field 'nway': must be >= 2" in result.output
    assert not (tmp_path / "o").exists()
