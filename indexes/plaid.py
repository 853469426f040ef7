"""PLAID (ColBERTv2) indexes behind colmed's shared :class:`~colmed.indexes.base.Retriever` interface.

An index directory written by ``build_index("colbert", ...)`` holds::

    <dir>/manifest.json   kind "colbert", model (checkpoint), dims, settings, stats ...
    <dir>/docs.jsonl      pid -> string document id and title (colbert-ai's pids are line positions)
    <dir>/plaid/          colbert-ai's PLAID index, untouched (usable with colbert-ai's own Searcher)
    <dir>/encoder/        only for an untrained ColBERT built from a plain model: that model, so search
                          encodes queries exactly as indexing encoded documents

Who encodes: a sentence-transformers ``MultiVectorEncoder`` (``colmed train colbert``'s output, PyLate) or
a plain sentence-transformers/BERT model (made an untrained ColBERT by
:func:`colmed.colbert.multivector.colbert_from_base`) encodes documents and queries with its own
conventions, and colbert-ai only clusters, compresses, probes and scores the embeddings it is handed
(``settings["encoder"] == "multivector"``), on torch or OpenVINO (``settings["encoder_backend"]``; queries
are encoded on the documents' engine unless a search asks for another). A plain model's PCA sample is
encoded once, for the PCA and the index (``settings["pca"]``). A colbert-ai/Stanford checkpoint
(``HF_ColBERT``) or a hub name is encoded by colbert-ai itself, on torch, as before
(``settings["encoder"] == "colbert-ai"``).

Search settings follow colbert-ai's defaults for the requested ``k`` unless given explicitly
(``ncells``, ``ndocs``, ``centroid_score_threshold``); they are passed on every call.

Example (not run as a doctest: it needs a trained ColBERT checkpoint and colbert-ai's C++ extensions,
compiled once in ~2.5 min; ``tests/test_colbert.py`` runs this path on a tiny model):
    >>> from colmed.indexes.base import build_index, load_index
    >>> from colmed.data.datasets import load_dataset
    >>> ds = load_dataset("../shared/beir/nfcorpus")                                  # doctest: +SKIP
    >>> build_index("colbert", ds, "runs/nfcorpus-plaid", model="runs/colbert-minilm",
    ...             nbits=2, doc_maxlen=300)                                          # doctest: +SKIP
    >>> index = load_index("runs/nfcorpus-plaid")                                     # doctest: +SKIP
    >>> index.search({"q1": "statins and breast cancer"}, k=3)                        # doctest: +SKIP
    {'q1': {'MED-2427': 24.1, 'MED-10': 23.8, 'MED-2429': 23.5}}
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from colmed.core.errors import InputError
from colmed.core.io import resolve_model_arg
from colmed.indexes.base import IndexManifest, Results, read_docs, write_docs

PLAID_SUBDIR = "plaid"


def search_settings_for_k(k: int) -> dict[str, Any]:
    """colbert-ai's own defaults for a given ``k`` (``Searcher.dense_search``), stated once and recorded."""
    if k <= 10:
        return {"ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 256}
    if k <= 100:
        return {"ncells": 2, "centroid_score_threshold": 0.45, "ndocs": 1024}
    return {"ncells": 4, "centroid_score_threshold": 0.4, "ndocs": max(k * 4, 4096)}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


ENCODER_SUBDIR = "encoder"
LEGACY_DOC_MAXLEN = 300


def uses_colbert_ai_encoder(model: str) -> bool:
    """True for a colbert-ai/Stanford checkpoint or a hub name: colbert-ai encodes those itself."""
    from colmed.colbert.multivector import checkpoint_kind

    return checkpoint_kind(model) in ("stanford", "unknown")


def _multivector_model(model: str, passages: list[str], out_dir: Path, dim: int | None, pca_passages: int,
                       device: str | None, backend: str | None, quantize: str | None, reuse_pca_encodings: bool):
    """The MultiVectorEncoder that encodes this index, the model reference the manifest records, and for a
    plain model the :class:`~colmed.colbert.multivector.UntrainedColbert` made from it (its PCA and, with
    ``reuse_pca_encodings``, the PCA sample's embeddings for the index)."""
    from colmed.colbert.multivector import checkpoint_kind, load_colbert, untrained_colbert

    if checkpoint_kind(model) == "multivector":
        if dim is not None:
            raise InputError("dim applies to a ColBERT built from a plain model, not to a ColBERT checkpoint",
                             field="dim")
        return load_colbert(model, device=device, backend=backend, quantize=quantize), model, None
    built = untrained_colbert(model, dim, pca_texts=passages[:pca_passages], device=device, backend=backend,
                              quantize=quantize, keep_sample_embeddings=reuse_pca_encodings)
    built.save(out_dir / ENCODER_SUBDIR)
    return built.model, ENCODER_SUBDIR, built


def _reusing(encode: "Callable[[list[str]], list]", known: dict[str, Any], counters: dict[str, int]):
    """``encode`` for colbert-ai's indexer, answering passages already encoded (``known``: text -> embedding)
    from memory and encoding the rest in one call, in the order asked."""

    def encode_documents(texts: list[str]) -> list:
        missing = [t for t in texts if t not in known]
        fresh = iter(encode(missing) if missing else [])
        counters["reused"] += len(texts) - len(missing)
        counters["encoded"] += len(missing)
        return [known[t] if t in known else next(fresh) for t in texts]

    return encode_documents


def _check_nbits(dim: int, nbits: int) -> None:
    if dim % (nbits * 8):
        raise InputError(f"PLAID packs each {dim}-d token vector's residual in bytes: dim must be a multiple of "
                         f"8 x nbits ({8 * nbits}); use a smaller nbits", field="nbits")


def build_plaid_index(dataset, out_dir: Path, model: str, nbits: int = 2, doc_maxlen: int | None = None,
                      batch_size: int = 32, device: str | None = None, kmeans_niters: int = 4,
                      reuse_sample_encodings: bool = True, recall_sample: int = 50, dim: int | None = None,
                      pca_passages: int = 2000, kmeans_threads: int | None = None, backend: str | None = None,
                      quantize: str | None = None, reuse_pca_encodings: bool = True, **extra) -> IndexManifest:
    """Encode ``dataset.corpus`` with the ColBERT checkpoint ``model`` into a PLAID index in ``out_dir``.

    Called by :func:`colmed.indexes.base.build_index`, which owns ``out_dir`` (a temp dir renamed on success) and
    writes the manifest returned here. Documents are indexed as ``Document.full_text`` (title, then text).
    On corpora small enough that colbert-ai's k-means sample is the whole corpus, the sample's encodings
    are reused for the index (``reuse_sample_encodings``) instead of encoding every document twice.
    k-means runs with ``kmeans_threads`` faiss threads, by default the cores free when it starts (on a busy
    machine faiss with every core stalls; :mod:`colmed.colbert.adapter`). The manifest records the k-means
    settings used (``settings["kmeans"]``) and where the build time went (``stats["phase_seconds"]``).

    ``backend``/``quantize``: the engine colmed's encoder runs on (torch, or openvino fp32/int8/bf16:
    :func:`colmed.colbert.multivector.use_encoder_backend`), recorded in ``settings["encoder_backend"]``;
    searches encode queries on the same one unless told otherwise. A plain model's PCA sample
    (``pca_passages``, the corpus's first passages) is encoded once: its embeddings, projected, are indexed
    as they are (``reuse_pca_encodings``; ``False`` encodes them again, as before, to measure the saving).
    ``settings["pca"]`` records the fit and whether its encodings were reused.
    """
    from colmed.colbert import adapter

    unknown = {k: v for k, v in extra.items() if v is not None}
    if unknown:
        raise InputError(f"unknown option(s) for the colbert index: {', '.join(sorted(unknown))}")
    if not model:
        raise InputError("a ColBERT checkpoint is required (--model)", field="model")
    if nbits not in (1, 2, 4, 8):
        raise InputError(f"nbits must be 1, 2, 4 or 8, got {nbits}", field="nbits")
    from colmed.bi_encoder.encoder import check_backend

    backend, quantize = check_backend(backend, quantize)
    resolved_device = adapter.resolve_device(device)
    if Path(model).exists():  # a local checkpoint: record it so the index loads from any working directory
        model = str(Path(model).resolve())
    out_dir = Path(out_dir)
    doc_ids = dataset.doc_ids()
    documents = [dataset.corpus[d] for d in doc_ids]
    # colbert-ai's collection is one passage per line; it reads lists in memory, but keep texts single-line
    # so the index matches what its TSV loader would have seen.
    passages = [" ".join(doc.full_text.split()) for doc in documents]
    write_docs(out_dir, doc_ids, [doc.title for doc in documents])

    started = time.time()
    log = io.StringIO()
    own_encoder: dict[str, Any] = {}
    conventions: dict[str, Any] = {}
    model_seconds = 0.0
    pca: dict[str, Any] | None = None
    pca_seconds: dict[str, float] = {}
    reuse_counts = {"reused": 0, "encoded": 0}
    known: dict[str, Any] = {}  # passage -> its embedding from the PCA's pass, served to colbert-ai's indexer
    if uses_colbert_ai_encoder(model):
        if dim is not None:
            raise InputError("a colbert-ai checkpoint has a trained projection; dim does not apply", field="dim")
        if backend != "torch":
            raise InputError(f"colbert-ai encodes its own checkpoints on torch; --backend {backend} applies to "
                             "sentence-transformers ColBERT models and plain models", field="backend")
        metadata = Path(model) / "artifact.metadata"
        if metadata.is_file():  # a local checkpoint says its dim; a hub one is checked by colbert-ai itself
            _check_nbits(int(json.loads(metadata.read_text(encoding="utf-8")).get("dim", 128)), nbits)
        doc_maxlen = doc_maxlen or LEGACY_DOC_MAXLEN
        model_ref = model
    else:
        from colmed.colbert import multivector

        # The PCA sample is encoded at the model's default document length; at another doc_maxlen the
        # index's documents are read differently, so the sample is encoded again for it.
        reusable = reuse_pca_encodings and doc_maxlen in (None, multivector.DEFAULT_DOCUMENT_LENGTH)
        model_started = time.time()
        encoder, model_ref, built = _multivector_model(model, passages, out_dir, dim, pca_passages, device,
                                                       backend, quantize, reusable)
        # loading the model and, for a plain model, encoding pca_passages for its projection's PCA (with
        # reuse_pca_encodings, that encoding is also the index's for those passages)
        model_seconds = time.time() - model_started
        if doc_maxlen:  # an index-time choice, like colbert-ai's doc_maxlen: documents only
            multivector.set_document_length(encoder, doc_maxlen)
        conventions = multivector.conventions(encoder)
        _check_nbits(conventions["dim"], nbits)
        doc_maxlen = conventions["document_length"]

        def encode(texts: list[str]) -> list:
            return multivector.encode_documents(encoder, texts, batch_size)

        if built is not None and built.pca is not None:
            pca_seconds = {"encode": built.pca.pop("encode_seconds"), "fit": built.pca.pop("fit_seconds")}
            pca = {**built.pca, "reused_for_index": bool(built.sample_embeddings)}
            if not built.sample_embeddings:
                pca["not_reused_because"] = ("reuse_pca_encodings=False" if not reuse_pca_encodings else
                                             f"doc_maxlen {doc_maxlen} differs from the PCA sample's "
                                             f"{multivector.DEFAULT_DOCUMENT_LENGTH} tokens")
            else:
                known.update(zip(passages[:pca_passages], built.sample_embeddings))
                built.sample_embeddings = []
                encode = _reusing(encode, known, reuse_counts)
        own_encoder = {"encode_documents": encode, "dim": conventions["dim"],
                       "query_maxlen": multivector.query_token_limit(encoder)}
    info = adapter.build_plaid(str(model), passages, out_dir / PLAID_SUBDIR, nbits=nbits, doc_maxlen=doc_maxlen,
                               index_bsize=batch_size, scratch=out_dir / ".scratch", kmeans_niters=kmeans_niters,
                               log=log, reuse_sample_encodings=reuse_sample_encodings,
                               kmeans_threads=kmeans_threads, **own_encoder)
    seconds = time.time() - started
    known.clear()  # the PCA sample's embeddings are in the index now; free them before the recall check
    source_model, model = model, model_ref
    shutil.rmtree(out_dir / ".scratch", ignore_errors=True)

    metadata = json.loads((out_dir / PLAID_SUBDIR / "metadata.json").read_text(encoding="utf-8"))
    num_embeddings = int(metadata["num_embeddings"])
    plaid_bytes = _dir_bytes(out_dir / PLAID_SUBDIR)
    if own_encoder:
        from colmed.colbert.multivector import encoder_backend

        backend_record = encoder_backend(encoder)
    if pca is not None:
        pca["index_passages_reused"] = reuse_counts["reused"]  # colbert-ai may ask twice (k-means sample, index)
    settings = {"encoder": "multivector" if own_encoder else "colbert-ai",
                **({"conventions": conventions} if conventions else {}),
                **({"encoder_backend": backend_record} if own_encoder else {}),
                **({"pca": pca} if pca is not None else {}),
                **({"base_model": source_model} if model != source_model else {}),
                "nbits": nbits, "doc_maxlen": doc_maxlen, "query_maxlen": info["query_maxlen"],
                "index_bsize": batch_size, "kmeans_niters": kmeans_niters, "device": resolved_device,
                "reuse_sample_encodings": reuse_sample_encodings,
                "num_partitions": metadata.get("num_partitions"),
                # threads vary with the machine's load at build time; the rest fixes the centroids (with the data)
                "kmeans": {key: info["kmeans"][key] for key in (
                    "threads", "threads_reason", "niter", "sample_embeddings", "points", "max_points_per_centroid",
                    "seed", "wait_policy") if key in info["kmeans"]},
                "search": {"k<=10": search_settings_for_k(10), "k<=100": search_settings_for_k(100),
                           "k>100": "ncells=4, centroid_score_threshold=0.4, ndocs=max(4k, 4096)"}}
    stats = {"num_embeddings": num_embeddings, "avg_doclen": round(num_embeddings / max(1, len(doc_ids)), 2),
             "index_bytes": plaid_bytes, "bytes_per_token": round(plaid_bytes / max(1, num_embeddings), 2),
             "build_seconds": round(seconds, 2), "encoded_passages": info["encoded_passages"],
             "reused_sample_encodings": info["reused_sample_encodings"],
             **({"pca_seconds": pca_seconds} if pca_seconds else {}),
             "phase_seconds": {"model_and_pca": round(model_seconds, 3), **info["phase_seconds"],
                               "other": round(seconds - model_seconds - sum(info["phase_seconds"].values()), 3)}}
    from colmed.core.provenance import package_versions

    manifest = IndexManifest(kind="colbert", model=str(model), dims=int(info["dim"]), num_docs=len(doc_ids),
                             settings=settings, stats=stats, versions=package_versions())
    if recall_sample:
        # PLAID prunes candidates by centroids; measure what that costs against exhaustive MaxSim.
        probes = list(dataset.queries.values())[:recall_sample] or [
            " ".join(p.split()[:12]) for p in passages[::max(1, len(passages) // recall_sample)][:recall_sample]]
        k = min(10, len(doc_ids))
        recall_started = time.time()
        stats["ann_recall@10"] = round(plaid_recall(PlaidIndex(out_dir, manifest, model=model, device=device),
                                                    probes, k=k), 4)
        stats["ann_recall_queries"] = len(probes)
        stats["phase_seconds"]["recall_check"] = round(time.time() - recall_started, 3)
    return manifest


def plaid_recall(index: "PlaidIndex", queries: list[str], k: int = 10) -> float:
    """Mean fraction of the exhaustive top-``k`` that the index's normal PLAID search also returns.

    The exhaustive search is PLAID with pruning switched off: every centroid probed
    (``ncells`` = all partitions), no centroid-score threshold, every document kept for the final
    MaxSim over its full (decompressed) embeddings, i.e. exact late interaction over what is stored.
    """
    if not queries:
        return 1.0
    approx = index._searcher.search_batch(queries, k, **index.settings_for(k))
    partitions = int(index.manifest.settings.get("num_partitions") or 1 << 20)
    exact = index._searcher.search_batch(queries, k, ncells=partitions, centroid_score_threshold=-1.0,
                                         ndocs=4 * len(index.doc_ids))
    hits = [len(set(a[0]) & set(e[0])) / max(1, len(e[0])) for a, e in zip(approx, exact)]
    return sum(hits) / len(hits)


class PlaidIndex:
    """A PLAID index directory opened for search: ``search(queries, k)`` returns string document ids.

    ``ncells``, ``ndocs`` and ``centroid_score_threshold`` given here apply to every search; when not given,
    colbert-ai's defaults for each call's ``k`` are used (:func:`search_settings_for_k`).
    """

    def __init__(self, index_dir: str | Path, manifest: IndexManifest, model: str | None = None,
                 device: str | None = None, ncells: int | None = None, ndocs: int | None = None,
                 centroid_score_threshold: float | None = None, batch_size: int = 128,
                 query_maxlen: int | None = None, backend: str | None = None, quantize: str | None = None):
        from colmed.colbert import adapter

        self.index_dir = Path(index_dir)
        self.manifest = manifest
        self.doc_ids, self.titles = read_docs(self.index_dir)
        plaid = self.index_dir / PLAID_SUBDIR
        if not (plaid / "metadata.json").is_file():
            raise InputError("no PLAID index inside (plaid/metadata.json missing)", path=self.index_dir)
        checkpoint = model or manifest.model
        if not checkpoint:
            raise InputError("manifest names no model", path=self.index_dir / "manifest.json", field="model")
        if checkpoint == ENCODER_SUBDIR:  # the untrained ColBERT saved inside the index
            checkpoint = str(self.index_dir / ENCODER_SUBDIR)
        if Path(checkpoint).is_absolute() and not Path(checkpoint).exists():
            raise InputError(f"the index's checkpoint {checkpoint} is gone; pass model=<its new location>",
                             path=self.index_dir / "manifest.json", field="model")
        # A relative path (from an index built before paths were stored absolute) is never sent to the hub.
        checkpoint = resolve_model_arg(checkpoint, path=None if model else self.index_dir / "manifest.json")
        self.device = adapter.resolve_device(device)
        self.overrides = {k: v for k, v in (("ncells", ncells), ("ndocs", ndocs),
                                            ("centroid_score_threshold", centroid_score_threshold)) if v is not None}
        self.batch_size = batch_size
        # The index holds documents only, so queries may be read longer than the model was trained with
        # (ColBERTv2 reads ArguAna's argument-length queries to 300 tokens).
        encode_queries = None
        if manifest.settings.get("encoder") == "multivector":
            from colmed.colbert import multivector
            from colmed.indexes.dense import query_backend

            # queries on the engine the documents were encoded on, unless asked otherwise
            backend, quantize = query_backend(manifest, backend, quantize)
            encoder = multivector.load_colbert(checkpoint, device=self.device, backend=backend, quantize=quantize)
            if query_maxlen:
                multivector.set_query_length(encoder, query_maxlen)
            query_maxlen = multivector.query_token_limit(encoder)
            encode_queries = lambda texts: multivector.encode_queries(encoder, texts, batch_size)  # noqa: E731
            self.encoder = encoder
            self.query_encoder_backend = multivector.encoder_backend(encoder)
        elif (backend or "torch") != "torch" or quantize not in (None, "none"):
            raise InputError("this index's queries are encoded by colbert-ai on torch (a colbert-ai checkpoint); "
                             "--backend/--quantize apply to indexes of sentence-transformers ColBERT models",
                             path=self.index_dir, field="backend")
        else:
            self.query_encoder_backend = {"backend": "torch", "quantization": None}
        self._searcher = adapter.PlaidSearcher(plaid, checkpoint, num_docs=len(self.doc_ids),
                                               query_maxlen=query_maxlen or manifest.settings.get("query_maxlen"),
                                               encode_queries=encode_queries)
        self.query_maxlen = self._searcher.query_maxlen

    @classmethod
    def load(cls, index_dir: str | Path, manifest: IndexManifest, device: str | None = None, **extra) -> "PlaidIndex":
        """The ``LOADERS["colbert"]`` entry point: open ``index_dir`` described by ``manifest``.

        Accepts ``model`` (another copy of the checkpoint), ``ncells``, ``ndocs``,
        ``centroid_score_threshold``, ``batch_size``, ``query_maxlen`` (query tokens read; default: the
        model's) and ``backend``/``quantize`` (the query encoder's engine; default: the one the documents were
        encoded on, ``settings["encoder_backend"]``); options other families use and left unset are ignored.
        """
        known = {"model", "ncells", "ndocs", "centroid_score_threshold", "batch_size", "query_maxlen", "backend",
                 "quantize"}
        unknown = sorted(k for k, v in extra.items() if k not in known and v is not None)
        if unknown:
            raise InputError(f"unknown option(s) for a colbert index: {', '.join(unknown)}")
        return cls(index_dir, manifest, device=device, **{k: v for k, v in extra.items() if k in known and v is not None})

    def settings_for(self, k: int) -> dict[str, Any]:
        """The ncells/ndocs/centroid_score_threshold a search with this ``k`` uses."""
        return {**search_settings_for_k(k), **self.overrides}

    def search(self, queries: Mapping[str, str], k: int = 100) -> Results:
        """Rank the corpus for each query; ``{qid: {doc_id: score}}`` with at most ``k`` docs, best first."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}", field="k")
        qids = list(queries)
        settings = self.settings_for(k)
        results: Results = {}
        for start in range(0, len(qids), self.batch_size):
            batch = qids[start:start + self.batch_size]
            ranked = self._searcher.search_batch([queries[q] for q in batch], k, **settings)
            for qid, (pids, scores) in zip(batch, ranked):
                results[qid] = {self.doc_ids[p]: s for p, s in zip(pids, scores)}
        return results

    def search_one(self, text: str, k: int = 10) -> list[tuple[str, float]]:
        """One query: ``[(doc_id, score)]`` best first."""
        return list(self.search({"q": text}, k)["q"].items())
