"""PLAID's k-means on a busy machine (issue #19): colmed runs colbert-ai's faiss k-means with the cores that are
free when it starts. These tests pin what that choice may and may not change: the thread count follows the
load, and the centroids (hence the index) do not depend on it."""

from __future__ import annotations

import pytest
import torch

from colmed.colbert import adapter
from colmed.core.errors import InputError


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
