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


def test_positives_per_query_are_capped_highest_grades_first(sample_dataset_dir):
    from colmed.data.datasets import load_dataset
    from colmed.data_gen.labelled import labelled_records

    ds = load_dataset(sample_dataset_dir)
    assert max(len(v) for v in ds.qrels.values()) == 3  # so a cap of 2 binds on some queries and not others
    recs, counts = labelled_records(ds, num_negatives=2, max_positives_per_query=2, progress=False)
    by_query: dict[str, list] = {}
    for rec in recs:
        by_query.setdefault(rec.note_id, []).append(rec)
    for qid, judged in ds.qrels.items():
        kept = [r.positive_id for r in by_query.get(qid, [])]
        expected = sorted(judged, key=lambda d: (-judged[d], d))[:2]  # highest grade first, then by id
        assert kept == expected
    assert counts["pairs_judged"] == sum(len(v) for v in ds.qrels.values())
    assert counts["pairs_kept"] == len(recs) == sum(min(len(v), 2) for v in ds.qrels.values())
    assert counts["pairs_kept"] < counts["pairs_judged"]


def test_labelled_and_mined_negatives_share_one_margin_guard(sample_dataset_dir):
    """Every kept negative scores at most pos - |pos| * margin: the guard of colmed.data_gen.mining.apply_margin."""
    from colmed.data.datasets import load_dataset
    from colmed.data_gen.labelled import labelled_records
    from colmed.data_gen.mining import apply_margin

    ds = load_dataset(sample_dataset_dir)
    guarded, counts = labelled_records(ds, num_negatives=3, relative_margin=0.5, progress=False)
    unguarded, _ = labelled_records(ds, num_negatives=3, relative_margin=None, progress=False)
    assert counts["relative_margin"] > 0
    for g, u in zip(guarded, unguarded):
        # The unguarded top 3 that pass the guard are the first of the guarded negatives.
        passing = [c[0] for c in apply_margin(list(zip(u.negative_ids, u.negative_scores)), g.positive_score,
                                              relative_margin=0.5)]
        assert g.negative_ids[:len(passing)] == passing
        assert all(s <= g.positive_score - abs(g.positive_score) * 0.5 for s in g.negative_scores)


def test_labelled_split_is_decontaminated_against_another_test_split(tmp_path, sample_dataset_dir):
    """The supervised source gets the same --contamination-check/--decontaminate as generated triplets: records
    whose query is one of the benchmark's test queries are dropped and logged, the rest written unchanged."""
    import json

    from colmed.data.datasets import load_dataset

    ds = load_dataset(sample_dataset_dir)
    shared = dict(list(ds.queries.items())[:2])
    bench = tmp_path / "bench"
    (bench / "qrels").mkdir(parents=True)
    (bench / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": "unrelated text"}) + "\n"
                                                for i in range(2)))
    (bench / "queries.jsonl").write_text("".join(json.dumps({"_id": f"b{i}", "text": t}) + "\n"
                                                 for i, t in enumerate(shared.values())))
    (bench / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nb0\td0\t1\nb1\td1\t1\n")
    out = tmp_path / "lab"
    r = CliRunner().invoke(main, ["generate", "--labelled", str(sample_dataset_dir), "--labelled-split", "test",
                                  "--out", str(out), "--negatives", "2", "--no-progress",
                                  "--contamination-check", str(bench), "--decontaminate"])
    assert r.exit_code == 0, r.output
    kept = list(read_triplets(out))
    expected_removed = sum(len(ds.qrels[q]) for q in shared)
    assert {rec.note_id for rec in kept} == set(ds.qrels) - set(shared)
    assert len(kept) == sum(len(v) for v in ds.qrels.values()) - expected_removed
    removed = (out / "decontamination_removed.jsonl").read_text().splitlines()
    assert len(removed) == expected_removed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["contamination"]["removed"] == expected_removed
    assert manifest["counts"]["records"]["total"] == len(kept)


def test_num_queries_draws_a_seeded_subset_of_the_judged_queries(tmp_path, sample_dataset_dir):
    """--num-queries sizes a labelled source like a synthetic one: that many judged queries, every judged pair of
    each, the same draw for the same seed; more than the split holds is refused with nothing written."""
    from colmed.data.datasets import load_dataset

    qrels = load_dataset(sample_dataset_dir).qrels
    judged = {q for q, v in qrels.items() if v}

    def run(out, *extra):
        return CliRunner().invoke(main, ["generate", "--labelled", str(sample_dataset_dir), "--labelled-split",
                                         "test", "--out", str(out), "--negatives", "1", "--no-progress", *extra])

    queries = []
    for name, seed in (("a", "13"), ("b", "13"), ("c", "14")):
        r = run(tmp_path / name, "--num-queries", "4", "--seed", seed)
        assert r.exit_code == 0, r.output
        queries.append({rec.note_id for rec in read_triplets(tmp_path / name)})
    assert len(queries[0]) == 4 and queries[0] <= judged and queries[0] == queries[1] and queries[0] != queries[2]
    all_pairs = list(read_triplets(tmp_path / "a"))
    assert len(all_pairs) == sum(min(len(qrels[q]), 4) for q in queries[0])
    too_many = run(tmp_path / "d", "--num-queries", str(len(judged) + 1))
    assert too_many.exit_code == 2 and "num_queries" in too_many.output and not (tmp_path / "d").exists()
    without_labelled = CliRunner().invoke(main, ["generate", "--notes", str(tmp_path), "--out", str(tmp_path / "e"),
                                                 "--num-queries", "3"])
    assert without_labelled.exit_code == 2 and "--labelled" in without_labelled.output
