"""Fast checks of how triplets reach the ColBERT trainer and how its settings are read (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from colmed.cli import main
from colmed.colbert.training import ColbertTrainingConfig, auto_nway
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


def test_auto_nway_uses_the_smallest_negative_count_of_train_records(tmp_path):
    path = _write(tmp_path / "t.jsonl", [_record(0, 3), _record(1, 2), _record(2, 1, split="dev"), _record(3, 0)])
    assert auto_nway(path) == 3  # the dev record (1 negative) and the one without negatives do not count
    with pytest.raises(InputError, match="no 'train' record has hard negatives"):
        auto_nway(_write(tmp_path / "a.jsonl", [_record(0, 0), _record(1, 0)]))


def test_triplets_become_the_bi_encoders_columns_with_nway_minus_one_negatives(tmp_path):
    from colmed.bi_encoder.data import TripletTrainingData

    path = _write(tmp_path / "t.jsonl", [_record(0, 3), _record(1, 2), _record(2, 1), _record(3, 2, split="dev")])
    data = TripletTrainingData.from_path(path, num_negatives=auto_nway(path) - 1)
    # The column order is what the MaxSim losses read: query, positive, then the mined negatives.
    assert data.train.column_names == ["anchor", "positive", "negative_1"]
    assert data.train["anchor"] == ["question 0", "question 1", "question 2"]
    assert data.dev.qrels == {"q3": {"p3": 1}}
    # An explicit nway=3 asks for two negatives: the record with one is skipped and counted.
    data = TripletTrainingData.from_path(path, num_negatives=3 - 1)
    assert data.train.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert data.train["anchor"] == ["question 0", "question 1"] and data.stats["skipped_too_few_negatives"] == 1


def test_malformed_triplet_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_record(0)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.jsonl:2: malformed JSON"):
        auto_nway(path)


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
    cfg.write_text("keep_checkpoints: 'no'\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.yaml: field 'keep_checkpoints': expected true or false, got 'no'"):
        ColbertTrainingConfig.from_yaml(cfg)
    cfg.write_text("max_query_length: 2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.yaml: field 'max_query_length': must be >= 4"):
        ColbertTrainingConfig.from_yaml(cfg)


def test_shared_vocabulary_reaches_the_multi_vector_trainer_arguments(tmp_path):
    from sentence_transformers import MultiVectorEncoderTrainingArguments

    from colmed.bi_encoder.train import training_arguments

    config = ColbertTrainingConfig(base_model="m", batch_size=16, learning_rate=3e-5, max_steps=200,
                                   warmup_ratio=0.1, eval_steps=50)
    args = training_arguments(config, tmp_path / "ckpt", num_rows=1000, best_metric="eval_dev_ndcg@10",
                              arguments_class=MultiVectorEncoderTrainingArguments)
    assert isinstance(args, MultiVectorEncoderTrainingArguments)
    assert (args.per_device_train_batch_size, args.learning_rate, args.max_steps, args.get_warmup_steps(200)) == \
        (16, 3e-5, 200, 20)
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_dev_ndcg@10" and args.eval_steps == 50
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
