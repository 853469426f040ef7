"""PLAID builds on a busy or small machine (issue #19).

k-means: colmed runs colbert-ai's faiss k-means with the cores that are free when it starts. These tests pin
what that choice may and may not change: the thread count follows the load, and the centroids (hence the
index) do not depend on it.

Encoding: an untrained ColBERT made from a plain model encodes its PCA sample once for both the PCA and the
index, and the encoder can run on OpenVINO, recorded in the manifest and reused for queries (tests that run
OpenVINO skip where ``colmed[openvino]`` is not installed).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner

from colmed.colbert import adapter
from colmed.core.errors import InputError

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="colmed[openvino] (openvino) is not installed")


def test_centroids_equal_colbert_ai_own_kmeans_whatever_the_thread_count():
    adapter.apply_compat()
    from colbert.indexing.collection_indexer import compute_faiss_kmeans

    torch.manual_seed(0)
    sample = torch.nn.functional.normalize(torch.randn(6000, 64), dim=-1).half()  # colbert-ai keeps float16
    upstream = compute_faiss_kmeans(64, 128, 4, [[sample]])
    for threads in (1, 2):
        centroids, used = adapter.faiss_kmeans(sample, 128, 4, threads=threads)
        assert torch.equal(centroids, upstream), threads
        assert used["threads"] == threads and used["niter"] == 4 and used["k"] == 128
        assert used["sample_embeddings"] == used["points"] == 6000  # under faiss's 256-per-centroid cap


def test_faiss_subsample_cap_is_recorded():
    sample = torch.randn(3000, 16)
    _, used = adapter.faiss_kmeans(sample, 8, 2, threads=1, max_points_per_centroid=100)
    assert used["sample_embeddings"] == 3000 and used["points"] == 800 and used["max_points_per_centroid"] == 100


def test_thread_count_follows_the_load(monkeypatch):
    monkeypatch.setattr(adapter, "available_cores", lambda: 4)
    monkeypatch.setattr(adapter, "runnable_elsewhere", lambda: 0.0)
    assert adapter.kmeans_threads()[0] == 4
    monkeypatch.setattr(adapter, "runnable_elsewhere", lambda: 1.0)  # one competing process
    assert adapter.kmeans_threads()[0] == 3
    monkeypatch.setattr(adapter, "runnable_elsewhere", lambda: 9.0)  # every core taken: one thread, never zero
    threads, reason = adapter.kmeans_threads()
    assert threads == 1 and "9 threads of other processes" in reason
    monkeypatch.setattr(adapter, "runnable_elsewhere", lambda: None)  # no /proc/loadavg: all cores
    assert adapter.kmeans_threads()[0] == 4
    assert adapter.kmeans_threads(2) == (2, "requested")
    with pytest.raises(InputError, match="kmeans_threads"):
        adapter.kmeans_threads(0)


def test_faiss_thread_count_is_restored_after_kmeans():
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    adapter.faiss_kmeans(torch.randn(500, 8), 4, 1, threads=1)
    assert faiss.omp_get_max_threads() == before


def test_runnable_elsewhere_reads_this_machine():
    others = adapter.runnable_elsewhere(samples=2, interval=0.0)
    assert others is None or others >= 0


# ------------------------------------------------------------------------------- one encoding pass, backends


def _top10(index, queries) -> dict[str, set[str]]:
    return {qid: set(hits) for qid, hits in index.search(queries, k=10).items()}


@pytest.fixture(scope="module")
def torch_plaid(tmp_path_factory, minilm_path, sample_dataset_dir):
    """The bundled sample indexed with the untrained 128-d MiniLM ColBERT on torch, counting encoded passages."""
    from colmed.colbert import multivector
    from colmed.data.datasets import load_dataset
    from colmed.indexes.base import build_index

    dataset = load_dataset(sample_dataset_dir)
    out = tmp_path_factory.mktemp("plaid-torch") / "idx"
    counted, real = [], multivector.encode_documents
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multivector, "encode_documents",
                      lambda model, texts, *a, **k: counted.append(len(texts)) or real(model, texts, *a, **k))
        manifest = build_index("colbert", dataset, out, model=minilm_path, nbits=2, batch_size=16)
    return {"dataset": dataset, "out": out, "manifest": manifest, "encoded": sum(counted)}


@pytest.mark.colbert
def test_plaid_build_encodes_the_pca_sample_once_for_the_same_model_and_ranking(torch_plaid, minilm_path, tmp_path,
                                                                                  monkeypatch):
    from colmed.colbert import multivector
    from colmed.indexes.base import build_index, load_index

    dataset, once = torch_plaid["dataset"], torch_plaid["manifest"]
    assert torch_plaid["encoded"] == len(dataset.corpus)  # the PCA's pass was the index's
    pca = once.settings["pca"]
    assert pca["reused_for_index"] and pca["index_passages_reused"] == len(dataset.corpus) == pca["passages"]
    assert once.stats["pca_seconds"]["encode"] > 0 and once.stats["pca_seconds"]["fit"] > 0
    counted, real = [], multivector.encode_documents
    monkeypatch.setattr(multivector, "encode_documents",
                        lambda model, texts, *a, **k: counted.append(len(texts)) or real(model, texts, *a, **k))
    twice = build_index("colbert", dataset, tmp_path / "twice", model=minilm_path, nbits=2, batch_size=16,
                        reuse_pca_encodings=False, recall_sample=0)
    assert sum(counted) == 2 * len(dataset.corpus)  # as before: the PCA's pass, then the index's
    assert not twice.settings["pca"]["reused_for_index"]
    assert twice.settings["pca"]["not_reused_because"] == "reuse_pca_encodings=False"
    # the same model either way (the one saved with the index encodes the queries) ...
    saved = [multivector.load_colbert(d / "encoder") for d in (torch_plaid["out"], tmp_path / "twice")]
    assert torch.equal(saved[0][1].linear.weight, saved[1][1].linear.weight)
    # ... and the same top-10 for every query
    assert _top10(load_index(torch_plaid["out"]), dataset.queries) == _top10(load_index(tmp_path / "twice"),
                                                                            dataset.queries)


@pytest.mark.colbert
@needs_openvino
def test_plaid_on_openvino_fp32_ranks_like_torch_and_encodes_queries_on_it(torch_plaid, minilm_path, sample_dataset_dir,
                                                                           tmp_path, monkeypatch):
    from colmed.cli import main
    from colmed.indexes.base import IndexManifest, load_index

    monkeypatch.setenv("COLMED_CACHE_DIR", str(tmp_path / "cache"))  # the test's own export
    out = tmp_path / "ov"
    result = CliRunner().invoke(main, ["index", "--retriever", "colbert", "--backend", "openvino", "--dataset",
                                       str(sample_dataset_dir), "--model", minilm_path, "--batch-size", "16",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = IndexManifest.read(out)
    assert manifest.settings["encoder_backend"]["backend"] == "openvino"
    assert manifest.settings["encoder_backend"]["quantization"] is None
    assert manifest.settings["pca"]["encoder_backend"]["backend"] == "openvino"  # the one pass ran on openvino
    assert torch_plaid["manifest"].settings["encoder_backend"] == {"backend": "torch", "quantization": None}
    index = load_index(out)
    assert index.query_encoder_backend["backend"] == "openvino"  # queries on the documents' engine
    assert type(index.encoder[0].model).__name__ == "OpenVINOTransformerModel"
    dataset = torch_plaid["dataset"]
    assert _top10(index, dataset.queries) == _top10(load_index(torch_plaid["out"]), dataset.queries)
    # queries on torch over the openvino documents: asked for, and recorded in the run
    result = CliRunner().invoke(main, ["search", "--index", str(out), "--queries", str(sample_dataset_dir),
                                       "--backend", "torch",
                                       "--k", "10", "--out", str(tmp_path / "run.trec")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "run.trec.json").read_text())
    assert sidecar["query_encoder"] == {"backend": "torch", "quantization": None}
    assert sidecar["index"]["settings"]["encoder_backend"]["backend"] == "openvino"


@needs_openvino
def test_colbert_ai_checkpoints_refuse_another_backend(sample_dataset_dir, tmp_path):
    from colmed.data.datasets import load_dataset
    from colmed.indexes.base import build_index

    with pytest.raises(InputError, match="field 'backend': colbert-ai encodes its own checkpoints on torch"):
        build_index("colbert", load_dataset(sample_dataset_dir), tmp_path / "x", model="colbert-ir/colbertv2.0",
                    backend="openvino")
    assert not (tmp_path / "x").exists()


@needs_openvino
def test_benchmark_backend_joins_each_colbert_retrievers_build_options():
    from colmed.benchmark.cache import build_options
    from colmed.benchmark.spec import BenchmarkConfig

    retrievers = ["bm25", "colbert:some/model"]
    plain = BenchmarkConfig(retrievers=retrievers, out="b").retriever_specs()
    int8 = BenchmarkConfig(retrievers=retrievers, out="b", backend="openvino", quantize="int8")
    specs = int8.retriever_specs()
    assert build_options(specs[1], int8)["backend"] == "openvino" and build_options(specs[1], int8)["quantize"] == "int8"
    assert specs[0].options == {} and plain[1].options == {}  # torch keeps its cached runs
