"""Metrics through ranx checked against hand-computed values; protocol steps; TREC files."""

from __future__ import annotations

import math

import pytest

from colmed.core.errors import InputError, ProtocolMismatchError
from colmed.eval.evaluation import compare_runs, evaluate_run, fuse_runs
from colmed.eval.protocol import check_comparable
from colmed.data.runs import exclude_self_hits, read_trec, write_trec

QRELS = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}
RUN = {"q1": {"d2": 0.9, "d1": 0.8, "d9": 0.1}, "q2": {"d9": 0.7, "d3": 0.6}}


def test_metrics_match_hand_computation():
    scores = evaluate_run(QRELS, RUN, ["ndcg@10", "mrr@10", "recall@100", "map@100"])
    # q1: ranks d2(1), d1(2). DCG = 1/log2(2) + 2/log2(3); IDCG = 2/log2(2) + 1/log2(3)
    ndcg_q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    ndcg_q2 = (1 / math.log2(3)) / 1.0
    assert scores["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert scores["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert scores["recall@100"] == pytest.approx(1.0)
    assert scores["map@100"] == pytest.approx(((1 + 1) / 2 + 0.5) / 2)


def test_missing_queries_fail_loudly_instead_of_scoring_zero():
    run = {"Q1": RUN["q1"], "Q2": RUN["q2"]}  # wrong id format
    with pytest.raises(InputError, match=r"run has results for 0 of 2 judged queries"):
        evaluate_run(QRELS, run, ["ndcg@10"], name="bm25.trec")


def test_self_hits_are_excluded_without_mutating_the_run():
    qrels = {"a1": {"a2": 1}}
    run = {"a1": {"a1": 10.0, "a2": 5.0}}
    assert evaluate_run(qrels, run, ["mrr@10"])["mrr@10"] == pytest.approx(0.5)
    assert evaluate_run(qrels, run, ["mrr@10"], exclude_self_hits=True)["mrr@10"] == pytest.approx(1.0)
    assert run == {"a1": {"a1": 10.0, "a2": 5.0}}
    assert exclude_self_hits(run) == {"a1": {"a2": 5.0}}


def test_compare_marks_significance_and_fuses():
    qrels = {f"q{i}": {"good": 1} for i in range(30)}
    strong = {q: {"good": 2.0, "bad": 1.0} for q in qrels}
    weak = {q: {"bad": 2.0, "good": 1.0} for q in qrels}
    for test in ("student", "fisher"):
        c = compare_runs(qrels, {"strong": strong, "weak": weak}, ["ndcg@10"], stat_test=test, fuse="rrf")
        assert c.significant["strong"]["ndcg@10"] == ["weak"]
        assert c.significant["weak"]["ndcg@10"] == []
        assert c.p_values["strong"]["weak"]["ndcg@10"] < 0.05
        assert "fused-rrf" in c.scores
    fused = fuse_runs([strong, weak], method="rrf")
    assert set(fused["q0"]) == {"good", "bad"}
    # a query one run cannot answer is fused from the runs that can
    partial = {q: d for q, d in weak.items() if q != "q1"}
    fused = fuse_runs([strong, partial], method="rrf")
    assert set(fused) == set(strong) and max(fused["q1"], key=fused["q1"].get) == "good"
    with pytest.raises(InputError, match="unknown test"):
        compare_runs(qrels, {"a": strong}, stat_test="bogus")


def test_trec_roundtrip_and_bad_line(tmp_path):
    p = tmp_path / "run.trec"
    write_trec(p, RUN)
    assert read_trec(p) == RUN
    assert p.read_text().splitlines()[0] == "q1 Q0 d2 1 0.900000 colmed"
    p.write_text("q1 Q0 d1 1 0.5 x\nq1 Q0 d2 2\n")
    with pytest.raises(InputError, match=r"run.trec:2: expected 6 columns"):
        read_trec(p)


def test_protocol_mismatch_names_the_field():
    with pytest.raises(ProtocolMismatchError, match="field 'k' is 100 in a but 10 in b"):
        check_comparable({"a": {"split": "test", "k": 100}, "b": {"split": "test", "k": 10}})
    check_comparable({"a": {"split": "test", "k": 100}, "b": None})


def test_evaluate_run_applies_the_dataset_protocol_unless_told_otherwise():
    from colmed.data.datasets import RetrievalDataset

    qrels = {"a1": {"a2": 1}, "a3": {"a4": 1}}
    run = {"a1": {"a1": 9.0, "a2": 5.0}, "a3": {"a3": 9.0, "a4": 5.0}}  # each query's own id ranks first
    arguana = RetrievalDataset("arguana", {}, {"a1": "x", "a3": "y"}, qrels)
    other = RetrievalDataset("my-notes", {}, {"a1": "x", "a3": "y"}, qrels)
    assert evaluate_run(arguana, run, ["mrr@10"])["mrr@10"] == pytest.approx(1.0)  # ArguAna: self-hits dropped
    assert evaluate_run(arguana, run, ["mrr@10"], exclude_self_hits=False)["mrr@10"] == pytest.approx(0.5)
    assert evaluate_run(other, run, ["mrr@10"])["mrr@10"] == pytest.approx(0.5)  # no protocol: kept
    assert evaluate_run(other, run, ["mrr@10"], exclude_self_hits=True)["mrr@10"] == pytest.approx(1.0)
    assert compare_runs(arguana, {"r": run}, ["mrr@10"], confidence=None).scores["r"]["mrr@10"] == pytest.approx(1.0)


def test_compare_trec_runs_reads_sidecars_and_records_the_protocol(tmp_path):
    from colmed.data.datasets import RetrievalDataset
    from colmed.eval.compare import compare_trec_runs

    qrels = {f"q{i}": {"good": 1} for i in range(30)}
    ds = RetrievalDataset("arguana", {}, {q: q for q in qrels}, qrels, fingerprint="fp", qrels_hash="qh")
    write_trec(tmp_path / "strong.trec", {q: {q: 3.0, "good": 2.0, "bad": 1.0} for q in qrels})
    write_trec(tmp_path / "weak.trec", {q: {"bad": 2.0, "good": 1.0} for q in qrels})
    comp = compare_trec_runs(ds, [tmp_path / "strong.trec", f"w={tmp_path / 'weak.trec'}"], metrics=["mrr@10"])
    assert comp.names == ["strong", "w"] and comp.significant["strong"]["mrr@10"] == ["w"]
    assert comp.scores["strong"]["mrr@10"] == pytest.approx(1.0)  # ArguAna protocol: own ids dropped
    assert comp.protocol["self_hits"].startswith("excluded") and "paired" in comp.protocol["significance_test"]
    kept = compare_trec_runs(ds, {"strong": tmp_path / "strong.trec"}, metrics=["mrr@10"], exclude_self_hits=False)
    assert kept.scores["strong"]["mrr@10"] == pytest.approx(0.5) and kept.protocol["self_hits"] == "kept"
    (tmp_path / "weak.trec.json").write_text('{"split": "test", "k": 10}')
    (tmp_path / "strong.trec.json").write_text('{"split": "test", "k": 100}')
    with pytest.raises(ProtocolMismatchError, match="field 'k'"):
        compare_trec_runs(ds, [tmp_path / "strong.trec", tmp_path / "weak.trec"])
    with pytest.raises(InputError, match="two runs are named 'strong'"):
        compare_trec_runs(ds, [tmp_path / "strong.trec", f"strong={tmp_path / 'weak.trec'}"])
