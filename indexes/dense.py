"""Dense single-vector indexes on faiss: exact inner product (default), HNSW or IVF-PQ.

Vectors are L2-normalised, so inner product is cosine similarity. faiss-gpu is used when installed
and a GPU is visible; the index is always stored in its CPU form so it opens anywhere. Approximate
indexes measure their recall@k against exact search at build time (``manifest.stats``), so a reader
of any result knows how much the approximation cost.

Example:
    >>> import numpy as np
    >>> vecs = np.eye(4, dtype="float32")
    >>> index = make_faiss_index(vecs, "flat")
    >>> index.search(vecs[:1], 1)[1].tolist()
    [[0]]
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from colmed.core.errors import InputError
from colmed.core.io import resolve_model_arg
from colmed.indexes.base import IndexManifest, read_docs, write_docs

INDEX_TYPES = ("flat", "hnsw", "ivfpq")


@dataclass
class FaissSettings:
    index_type: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int | None = None  # IVF cells; default 4*sqrt(n) (faiss guidelines), at most n/39
    pq_m: int | None = None  # PQ sub-quantizers; default dims/4 (8-bit codes)
    nprobe: int = 16


def make_faiss_index(vectors: np.ndarray, index_type: str = "flat", settings: FaissSettings | None = None):
    """Build a CPU faiss inner-product index over ``vectors`` (trained and filled)."""
    import faiss

    s = settings or FaissSettings(index_type=index_type)
    n, dims = vectors.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dims)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dims, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = s.ef_construction
        index.hnsw.efSearch = s.ef_search
    elif index_type == "ivfpq":
        nlist = s.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        pq_m = s.pq_m or max(1, dims // 4)
        if dims % pq_m:
            raise InputError(f"pq_m={pq_m} must divide the embedding size {dims}", field="pq_m")
        index = faiss.index_factory(dims, f"IVF{nlist},PQ{pq_m}", faiss.METRIC_INNER_PRODUCT)
        s.nlist, s.pq_m = nlist, pq_m
    else:
        raise InputError(f"unknown index type {index_type!r}; choose from {', '.join(INDEX_TYPES)}",
                         field="index_type")
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    _set_search_params(index, s)
    return index


def _set_search_params(index, s: FaissSettings) -> None:
    import faiss

    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = s.ef_search
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        ivf.nprobe = s.nprobe


def to_cpu(index):
    """A CPU copy of a GPU index (faiss writes CPU indexes only); a CPU index is returned as it is."""
    import faiss

    return faiss.index_gpu_to_cpu(index) if hasattr(index, "getDevice") else index


def to_gpu_if_available(index):
    """Move a flat or IVF index to GPU 0 when faiss-gpu is installed and a GPU is visible."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0 or hasattr(index, "hnsw"):
        return index  # HNSW has no GPU implementation in faiss
    res = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(res, 0, index)
    gpu._colmed_res = res  # keep resources alive as long as the index
    return gpu


def ann_recall(index, exact, queries: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-``k`` that the approximate index also returns."""
    _, approx_ids = index.search(queries, k)
    _, exact_ids = exact.search(queries, k)
    hits = [len(set(a) & set(e)) / len(set(e)) for a, e in zip(approx_ids.tolist(), exact_ids.tolist())]
    return float(np.mean(hits)) if hits else 1.0


class DenseIndex:
    """A faiss index plus the encoder that fills it; implements :class:`colmed.indexes.base.Retriever`."""

    def __init__(self, index, doc_ids: list[str], encoder, titles: list[str] | None = None):
        self.index, self.doc_ids, self.encoder = index, doc_ids, encoder
        self.titles = titles or [""] * len(doc_ids)

    def search(self, queries: Mapping[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        qids = list(queries)
        if not qids:
            return {}
        vecs = self.encoder.encode_queries([queries[q] for q in qids])
        return self.search_vectors(qids, vecs, k)

    def search_vectors(self, qids: list[str], vecs: np.ndarray, k: int = 100) -> dict[str, dict[str, float]]:
        scores, ids = self.index.search(vecs, min(k, len(self.doc_ids)))
        return {q: {self.doc_ids[i]: float(s) for i, s in zip(row_i, row_s) if i >= 0}
                for q, row_i, row_s in zip(qids, ids.tolist(), scores.tolist())}

    def get_scores(self, query: str) -> np.ndarray:
        """Exact score of ``query`` against every document, in ``doc_ids`` order (as ``BM25Index.get_scores``)."""
        vectors = to_cpu(self.index).reconstruct_n(0, len(self.doc_ids))
        return vectors @ self.encoder.encode_queries([query])[0]

    def save(self, index_dir: str | Path) -> None:
        """Write ``faiss.index`` and ``docs.jsonl`` (the manifest is written by the caller)."""
        import faiss

        faiss.write_index(to_cpu(self.index), str(Path(index_dir) / "faiss.index"))
        write_docs(index_dir, self.doc_ids, self.titles)

    @classmethod
    def load(cls, index_dir: str | Path, manifest: IndexManifest | None = None, device: str | None = None,
             batch_size: int = 32, backend: str | None = None, quantize: str | None = None, **_) -> "DenseIndex":
        """Open a dense index; queries are encoded on the backend the documents were (see :func:`query_backend`)."""
        import faiss

        from colmed.bi_encoder.encoder import DenseEncoder

        manifest = manifest or IndexManifest.read(index_dir)
        if not manifest.model:
            raise InputError("missing: a dense index names its model", path=Path(index_dir) / "manifest.json",
                             field="model")
        model = resolve_model_arg(manifest.model, path=Path(index_dir) / "manifest.json")
        try:
            index = faiss.read_index(str(Path(index_dir) / "faiss.index"))
        except RuntimeError as e:  # faiss reports a damaged file as a C++ exception
            raise InputError(f"faiss cannot read it ({str(e).strip().splitlines()[-1][:160]}); rebuild the index",
                             path=Path(index_dir) / "faiss.index") from None
        known = set(FaissSettings.__dataclass_fields__)
        _set_search_params(index, FaissSettings(**{k: v for k, v in manifest.settings.items() if k in known}))
        backend, quantize = query_backend(manifest, backend, quantize)
        encoder = DenseEncoder(model, query_prompt=manifest.query_prompt or "",
                               document_prompt=manifest.document_prompt or "", device=device,
                               batch_size=batch_size, max_seq_length=manifest.settings.get("max_seq_length"),
                               backend=backend, quantize=quantize)
        doc_ids, titles = read_docs(index_dir)
        return cls(to_gpu_if_available(index), doc_ids, encoder, titles)


def document_backend(manifest: IndexManifest) -> dict:
    """``{"backend", "quantization", ...}`` the index's documents were encoded on (torch for indexes built
    before backends were recorded)."""
    return dict(manifest.settings.get("encoder_backend") or {"backend": "torch", "quantization": None})


def query_backend(manifest: IndexManifest, backend: str | None = None, quantize: str | None = None
                  ) -> tuple[str, str | None]:
    """The backend queries are encoded on: the documents' unless ``backend`` or ``quantize`` is given
    (e.g. fp32 queries over int8 documents: ``backend="openvino"``, or ``"torch"``; the caller records it).

    Example:
        >>> int8 = {"backend": "openvino", "quantization": "int8"}
        >>> m = IndexManifest(kind="dense", settings={"encoder_backend": int8})
        >>> query_backend(m), query_backend(m, "torch"), query_backend(m, quantize="int8")
        (('openvino', 'int8'), ('torch', None), ('openvino', 'int8'))
    """
    built = document_backend(manifest)
    if backend is None and quantize is None:
        return built.get("backend") or "torch", built.get("quantization")
    return backend or built.get("backend") or "torch", quantize


def build_dense_in_memory(dataset, model: str | None = None, index_type: str = "flat",
                          query_prompt: str | None = None, document_prompt: str | None = None,
                          batch_size: int = 32, device: str | None = None, max_seq_length: int | None = None,
                          recall_sample: int = 200, backend: str | None = "torch", quantize: str | None = None,
                          **settings) -> tuple["DenseIndex", IndexManifest]:
    """Encode ``dataset.corpus`` into a faiss index held in memory; returns the index and its manifest.

    ``backend``/``quantize``: the encoder's engine (:class:`colmed.bi_encoder.encoder.DenseEncoder`), recorded
    in ``settings["encoder_backend"]``; searches of the index encode queries on the same one unless told otherwise.
    """
    import faiss

    from colmed.bi_encoder.encoder import DenseEncoder, manifest_record

    if not model:
        raise InputError("a dense index needs --model (a hub name or a local sentence-transformers folder)",
                         field="model")
    unknown = sorted(set(settings) - set(FaissSettings.__dataclass_fields__))
    if unknown:
        raise InputError(f"unknown dense setting(s) {', '.join(unknown)}; known: model, query_prompt, "
                         f"document_prompt, batch_size, device, max_seq_length, recall_sample, backend, quantize, "
                         f"{', '.join(FaissSettings.__dataclass_fields__)}", field=unknown[0])
    s = FaissSettings(index_type=index_type, **{k: v for k, v in settings.items() if v is not None})
    encoder = DenseEncoder(model, query_prompt, document_prompt, device=device, batch_size=batch_size,
                           max_seq_length=max_seq_length, backend=backend, quantize=quantize)
    docs = list(dataset.corpus.values())
    t0 = time.perf_counter()
    vectors = encoder.encode_documents([d.full_text for d in docs], show_progress=True)
    encode_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    index = make_faiss_index(vectors, s.index_type, s)
    stats = {"encode_seconds": round(encode_s, 3), "index_seconds": round(time.perf_counter() - t1, 3),
             "docs_per_second": round(len(docs) / max(encode_s, 1e-9), 2)}
    if s.index_type != "flat":
        qtexts = list(dataset.queries.values())[:recall_sample]
        probe = (encoder.encode_queries(qtexts) if qtexts
                 else vectors[np.random.default_rng(0).choice(len(vectors), min(recall_sample, len(vectors)),
                                                              replace=False)])
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        stats["ann_recall@10"] = round(ann_recall(index, exact, probe, min(10, len(docs))), 4)
        stats["ann_recall_queries"] = len(probe)
    settings_out = asdict(s)
    settings_out["max_seq_length"] = encoder.model.max_seq_length
    settings_out["normalized"] = True
    settings_out["encoder_backend"] = manifest_record(encoder.backend)
    manifest = IndexManifest(kind="dense", model=str(model), dims=encoder.dims, num_docs=len(docs),
                             settings=settings_out, query_prompt=encoder.query_prompt,
                             document_prompt=encoder.document_prompt, stats=stats)
    return DenseIndex(index, [d.doc_id for d in docs], encoder, [d.title for d in docs]), manifest


def build_dense_index(dataset, out_dir: str | Path, **options) -> IndexManifest:
    """Builder for ``build_index("dense", ...)``: :func:`build_dense_in_memory`, then saved into ``out_dir``."""
    index, manifest = build_dense_in_memory(dataset, **options)
    index.save(out_dir)
    return manifest
