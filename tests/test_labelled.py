"""Training triplets from a labelled split: judged pairs, mined negatives that are never judged relevant."""

from __future__ import annotations

from click.testing import CliRunner

from colmed.cli import main
from colmed.data.triplets import read_triplets


def test_labelled_split_to_triplets(tmp_path, sample_dataset_dir):
    out = tmp_path / "lab"
    r = CliRunner().invoke(main, ["generate", "--labelled", str(sample_dataset_dir), "--labelled-split", "test",
                                  "--out", str(out), "--negatives", "3", "--dev-fraction", "0.3", "--no-progress"])
    assert r.exit_code == 0, r.output
    recs = list(read_triplets(out))
    from colmed.data.datasets import load_dataset

    ds = load_dataset(sample_dataset_dir)
    assert len(recs) == sum(len(v) for v in ds.qrels.values())  # every judged pair (at most 4 per query)
    for rec in recs:
        qid = rec.note_id
        assert rec.positive_id in ds.qrels[qid] and rec.positive == ds.corpus[rec.positive_id].full_text
        assert not set(rec.negative_ids) & set(ds.qrels[qid])  # judged-relevant docs are never negatives
    splits = {}
    for rec in recs:
        splits.setdefault(rec.note_id, set()).add(rec.split)
    assert all(len(s) == 1 for s in splits.values()) and {"train", "dev"} <= set.union(*splits.values())
    assert (out / "export" / "colbert").is_dir() and (out / "manifest.json").is_file()
