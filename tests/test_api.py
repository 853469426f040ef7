"""The public API (``import colmed``): what a researcher does in a notebook gives the CLI's numbers."""

from __future__ import annotations

import pytest

import colmed
from colmed.core.errors import InputError
from colmed.data.datasets import Document, RetrievalDataset


@pytest.fixture(scope="module")
def sample():
    return colmed.load_dataset(colmed.SAMPLE_DATASET)


def test_in_memory_bm25_ranks_exactly_as_the_index_on_disk(sample, tmp_path):
    in_memory = colmed.build_index("bm25", sample, k1=1.2, b=0.6)
    on_disk = colmed.build_index("bm25", sample, tmp_path / "bm25", k1=1.2, b=0.6)
    reopened = colmed.load_index(tmp_path / "bm25")
    run_mem = colmed.search(in_memory, sample.queries, k=20)
    assert run_mem == colmed.search(on_disk, sample.queries, k=20) == colmed.search(reopened, sample.queries, k=20)
    assert in_memory.manifest.settings["k1"] == 1.2 and reopened.manifest.settings["b"] == 0.6
    # the settings are used, not just stored: other parameters rank differently on this corpus
    assert colmed.search(colmed.build_index("bm25", sample, k1=0.1, b=0.0), sample.queries, k=20) != run_mem


def test_in_memory_dense_index_matches_disk(sample, tmp_path, tiny_st_model_dir):
    mem = colmed.build_index("dense", sample, model=tiny_st_model_dir)
    disk = colmed.build_index("dense", sample, tmp_path / "dense", model=tiny_st_model_dir)
    run_mem, run_disk = colmed.search(mem, sample.queries, k=5), colmed.search(disk, sample.queries, k=5)
    assert run_mem.keys() == run_disk.keys()
    for q in run_mem:
        assert list(run_mem[q]) == list(run_disk[q])
        assert list(run_mem[q].values()) == pytest.approx(list(run_disk[q].values()), abs=1e-5)
    assert mem.manifest.kind == "dense" and mem.manifest.dims == disk.manifest.dims


@pytest.mark.parametrize("kind,settings,field", [
    ("bm25", {"k_1": 1.2}, "k_1"),
    ("dense", {"model": "unused", "nprobes": 4}, "nprobes"),
    ("colbert", {"model": "unused"}, "out"),
    ("splade", {}, "kind"),
])
def test_unknown_settings_and_kinds_are_refused_with_one_line(sample, kind, settings, field):
    with pytest.raises(InputError) as e:
        colmed.build_index(kind, sample, **settings)
    assert e.value.field == field and "\n" not in str(e.value)


def test_search_refuses_a_non_positive_k(sample):
    with pytest.raises(InputError, match="k must be"):
        colmed.search(colmed.build_index("bm25", sample), sample.queries, k=0)


def _arguana_like(name: str) -> RetrievalDataset:
    corpus = {d: Document(d, t) for d, t in [("a1", "cats are better pets"), ("a2", "dogs are better pets"),
                                             ("a3", "cats are independent"), ("a4", "dogs need walks")]}
    queries = {"a1": "cats are better pets", "a2": "dogs are better pets"}
    qrels = {"a1": {"a3": 1}, "a2": {"a4": 1}}
    return RetrievalDataset(name, corpus, queries, qrels)


def test_evaluate_applies_the_arguana_protocol_by_default():
    run = {"a1": {"a1": 9.0, "a3": 5.0}, "a2": {"a2": 9.0, "a4": 5.0}}  # each query first finds itself
    arguana = _arguana_like("arguana")
    assert colmed.evaluate(arguana, run)["mrr@10"] == 1.0  # self-hits removed: the answer is first
    assert colmed.evaluate(arguana, run, exclude_self_hits=False)["mrr@10"] == 0.5
    # another dataset keeps what the run says
    assert colmed.evaluate(_arguana_like("other"), run)["mrr@10"] == 0.5
    comparison = colmed.compare(arguana, {"a": run, "b": run})
    assert comparison.scores["a"]["mrr@10"] == 1.0


def test_fuse_is_reciprocal_rank_fusion():
    a = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    b = {"q": {"d3": 30.0, "d1": 20.0, "d2": 10.0}}
    fused = colmed.fuse([a, b])
    assert list(sorted(fused["q"], key=fused["q"].get, reverse=True)) == ["d1", "d3", "d2"]
    assert fused["q"]["d1"] == pytest.approx(1 / 61 + 1 / 62)
