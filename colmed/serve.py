"""Serve colmed indexes over HTTP (FastAPI): ``POST /search``, ``GET /indexes``, ``GET /health``.

:class:`IndexPool` is the engine: named indexes loaded once, each searched under its own lock (dense
encoders share one Hugging Face tokenizer, which raises "Already borrowed" when two threads use it at
once, and PLAID's searcher keeps per-call state), optionally fused with reciprocal rank fusion (ranx),
with every hit carrying its document id, title and score. :func:`create_app` puts the pool behind
FastAPI; the LangChain and LlamaIndex retrievers in :mod:`colmed.integrations` use the same pool
in-process or talk to a running ``colmed serve``.

Example (the bundled sample, BM25 in memory):
    >>> import colmed.api as colmed
    >>> ds = colmed.load_dataset(colmed.SAMPLE_DATASET)
    >>> pool = IndexPool({"bm25": colmed.build_index("bm25", ds)})
    >>> label, results = pool.search(["first-line drugs for high blood pressure"], k=1)
    >>> label, [hit["id"] for hit in results[0]]
    ('bm25', ['htn-01'])
    >>> results[0][0]["title"]
    'First-line treatment of hypertension'
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from colmed.core.errors import ColmedError, InputError

MAX_K = 1000
MAX_QUERY_CHARS = 4096
MAX_BATCH = 256
# Each index contributes this many hits (at least k) to a fusion, so RRF sees more than the final cut.
FUSION_DEPTH = 100
FUSION_METHODS = ("rrf",)
# ranx fuses with numba kernels: the first call compiles them (30-90 s on a busy 2-core machine), and
# numba's default threading layer must not be entered from two threads at once, so fusions take turns.
_FUSION_LOCK = threading.Lock()


class _Ticket:
    """One request's queries waiting for a batched search, and its results or error once done."""

    def __init__(self, texts: list[str], k: int):
        self.texts, self.k = texts, k
        self.results: list[dict[str, float]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()


class ServedIndex:
    """One loaded index: its retriever, manifest, id -> title map and the lock its searches take."""

    def __init__(self, name: str, retriever, manifest=None, path: str | Path | None = None,
                 titles: Mapping[str, str] | None = None):
        self.name, self.retriever, self.path = name, retriever, path
        self.manifest = manifest if manifest is not None else getattr(retriever, "manifest", None)
        if titles is None:
            ids, names = getattr(retriever, "doc_ids", None) or [], getattr(retriever, "titles", None) or []
            titles = dict(zip(ids, names))
        self.titles = dict(titles)
        self.lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._queue_lock = threading.Lock()
        self._texts: dict[str, str] | None = None
        self._texts_lock = threading.Lock()

    @classmethod
    def open(cls, name: str, index_dir: str | Path, **options) -> "ServedIndex":
        """Load the index folder ``index_dir`` once (any kind colmed writes)."""
        from colmed.indexes.base import IndexManifest, load_index, read_docs

        manifest = IndexManifest.read(index_dir)
        retriever = load_index(index_dir, **options)
        ids, titles = read_docs(index_dir)
        return cls(name, retriever, manifest, path=index_dir, titles=dict(zip(ids, titles)))

    def search(self, texts: list[str], k: int) -> list[dict[str, float]]:
        """``k`` best ``{doc_id: score}`` per query text, in the order given.

        Requests that arrive while a search runs wait in a queue; the next thread to take the lock
        searches everything queued in one call per ``k`` (one encoder batch instead of many), and each
        request gets its own queries' results. Nothing waits for a batch to fill.
        """
        ticket = _Ticket(texts, k)
        with self._queue_lock:
            self._queue.append(ticket)
        while not ticket.done.is_set():
            with self.lock:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                if batch:
                    self._search_batch(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.results

    def _search_batch(self, batch: list["_Ticket"]) -> None:
        for k in sorted({t.k for t in batch}):
            group = [t for t in batch if t.k == k]
            queries = {f"{j}:{i}": text for j, t in enumerate(group) for i, text in enumerate(t.texts)}
            try:
                run = self.retriever.search(queries, k=k)
            except Exception as e:  # every request of the batch gets the error; the server carries on
                for t in group:
                    t.error = e
                    t.done.set()
                continue
            for j, t in enumerate(group):
                t.results = [run.get(f"{j}:{i}", {}) for i in range(len(t.texts))]
                t.done.set()

    def texts(self) -> dict[str, str]:
        """Document texts (title, then body) from the corpus the index was built from, if it is still on disk.

        Indexes store ids and titles only; the text is read once, on first use, from the dataset source
        recorded in the manifest. An empty map when that source is not a local folder or file.
        """
        with self._texts_lock:
            if self._texts is None:
                self._texts = _read_corpus_texts(getattr(self.manifest, "dataset", {}) or {})
            return self._texts

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        stats = dict(getattr(m, "stats", {}) or {})
        settings = dict(getattr(m, "settings", {}) or {})
        kind = getattr(m, "kind", None)
        approximate = kind == "colbert" or (kind == "dense" and settings.get("index_type", "flat") != "flat")
        return {"name": self.name, "kind": kind, "model": getattr(m, "model", None), "dims": getattr(m, "dims", None),
                "documents": getattr(m, "num_docs", None) or len(self.titles),
                "index_type": settings.get("index_type"), "approximate": approximate,
                "ann_recall_at_10": stats.get("ann_recall@10"),
                "dataset": (getattr(m, "dataset", {}) or {}).get("name"),
                "path": str(self.path) if self.path is not None else None,
                "created": getattr(m, "created", None) or None}


def _read_corpus_texts(dataset_info: Mapping[str, Any]) -> dict[str, str]:
    from colmed.data.datasets import read_corpus

    source = dataset_info.get("source") or ""
    path = Path(source) if source else None
    if path is None or not path.exists():
        return {}
    corpus_file = path / "corpus.jsonl" if path.is_dir() else path
    if not corpus_file.is_file():
        return {}
    return {d: doc.full_text for d, doc in read_corpus(corpus_file).items()}


def corpus_texts(corpus) -> dict[str, str]:
    """Doc id -> text from a BEIR folder or ``corpus.jsonl`` path, a dataset, or a ``{id: Document | str}`` map."""
    if corpus is None:
        return {}
    if isinstance(corpus, (str, Path)):
        path = Path(corpus)
        if not path.exists():
            raise InputError("corpus not found", path=path)
        return _read_corpus_texts({"source": str(path)})
    corpus = getattr(corpus, "corpus", corpus)
    return {str(d): getattr(doc, "full_text", doc) for d, doc in corpus.items()}


class IndexPool:
    """Named indexes, each loaded once, searched alone or fused with RRF; thread-safe.

    ``indexes`` maps a name to an index folder or to a retriever already in memory (for example
    ``colmed.build_index("bm25", ds)``). ``fuse="rrf"`` makes fusion over all indexes the default when a
    request names none. ``corpus`` supplies document texts when the indexes' own dataset is not on disk.
    """

    def __init__(self, indexes: Mapping[str, Any], fuse: str | None = None, corpus=None,
                 fusion_depth: int = FUSION_DEPTH, **load_options):
        if not indexes:
            raise InputError("no index to serve: give at least one", field="index")
        if fuse is not None and fuse not in FUSION_METHODS:
            raise InputError(f"unknown fusion {fuse!r}; choose from {', '.join(FUSION_METHODS)}", field="fuse")
        self.indexes: dict[str, ServedIndex] = {}
        for name, target in indexes.items():
            if isinstance(target, (str, Path)):
                self.indexes[name] = ServedIndex.open(name, target, **load_options)
            elif isinstance(target, ServedIndex):
                self.indexes[name] = target
            elif hasattr(target, "search"):
                self.indexes[name] = ServedIndex(name, target)
            else:
                raise InputError(f"expected an index folder or a retriever, got {type(target).__name__}",
                                 field=name)
        self.fuse = fuse
        self.fusion_depth = fusion_depth
        self._corpus = corpus_texts(corpus)

    @classmethod
    def from_specs(cls, specs: list[str], fuse: str | None = None, **options) -> "IndexPool":
        """Indexes given as ``DIR`` (named after the folder) or ``NAME=DIR``, as on the command line."""
        indexes: dict[str, str] = {}
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = Path(spec).name or spec, spec
            if not name or not path:
                raise InputError(f"expected DIR or NAME=DIR, got {spec!r}", field="--index")
            if name in indexes:
                raise InputError(f"two indexes named {name!r}: name them with NAME=DIR", field="--index")
            indexes[name] = path
        return cls(indexes, fuse=fuse, **options)

    def describe(self) -> list[dict[str, Any]]:
        return [ix.describe() for ix in self.indexes.values()]

    def _resolve(self, index: str | None, indexes: list[str] | None, fuse: str | None) -> tuple[list[str], str | None]:
        if fuse is not None and fuse not in FUSION_METHODS:
            raise InputError(f"unknown fusion {fuse!r}; choose from {', '.join(FUSION_METHODS)}", field="fuse")
        if index is not None and (indexes or fuse):
            raise InputError("name one 'index', or several 'indexes' with 'fuse', not both", field="index")
        names = [index] if index is not None else list(indexes or [])
        for name in names:
            if name not in self.indexes:
                raise InputError(f"unknown index {name!r}; served: {', '.join(self.indexes)}", field="index")
        if len(set(names)) != len(names):
            raise InputError("an index is named twice", field="indexes")
        if index is not None:
            return names, None
        fuse = fuse or self.fuse or ("rrf" if len(names) > 1 else None)
        if not names:
            if fuse or len(self.indexes) == 1:
                names = list(self.indexes)
            else:
                raise InputError(f"{len(self.indexes)} indexes are served ({', '.join(self.indexes)}): "
                                 "name one with 'index', or fuse them with 'fuse': 'rrf'", field="index")
        return names, (fuse if len(names) > 1 else None)

    def search(self, queries: list[str], k: int = 10, index: str | None = None, indexes: list[str] | None = None,
               fuse: str | None = None, include_text: bool = False) -> tuple[str, list[list[dict[str, Any]]]]:
        """Search ``queries``: returns a label (the index name, or ``rrf(a+b)``) and per query its ranked hits
        ``{"id", "title", "score", "rank"}`` (plus ``"text"`` when ``include_text``)."""
        from colmed.indexes.search import check_search_args

        check_search_args({str(i): q for i, q in enumerate(queries)}, k, field="query")
        names, method = self._resolve(index, indexes, fuse)
        if method is None:
            runs = self.indexes[names[0]].search(queries, k)
            label = names[0]
        else:
            from colmed.eval.evaluation import fuse_runs

            depth = max(k, self.fusion_depth)
            per_index = [self.indexes[n].search(queries, depth) for n in names]
            with _FUSION_LOCK:
                fused = fuse_runs([{f"q{i}": hits for i, hits in enumerate(run)} for run in per_index],
                                  method=method)
            runs = [fused.get(f"q{i}", {}) for i in range(len(queries))]
            label = f"{method}({'+'.join(names)})"
        served = [self.indexes[n] for n in names]
        return label, [self._hits(run, k, served, include_text) for run in runs]

    def warm_up(self) -> None:
        """Compile ranx's fusion kernels now, so the first fused request does not wait for numba."""
        from colmed.eval.evaluation import fuse_runs

        with _FUSION_LOCK:
            fuse_runs([{"q": {"a": 1.0, "b": 0.5}}, {"q": {"b": 1.0, "c": 0.5}}], method="rrf")

    def _hits(self, run: Mapping[str, float], k: int, served: list[ServedIndex], include_text: bool):
        ranked = sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        texts = [self._corpus] + ([ix.texts() for ix in served] if include_text else [])
        hits = []
        for rank, (doc_id, score) in enumerate(ranked, 1):
            title = next((ix.titles[doc_id] for ix in served if doc_id in ix.titles), "")
            hit = {"id": doc_id, "title": title, "score": float(score), "rank": rank}
            if include_text:
                hit["text"] = next((t[doc_id] for t in texts if doc_id in t), None)
            hits.append(hit)
        return hits


# ---- HTTP schema -----------------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    """One query (``query``) or a batch (``queries``); one index, or several fused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"query": "statins and breast cancer", "k": 10},
                     {"queries": ["statins and breast cancer", "vitamin D"], "k": 5, "fuse": "rrf"}]})

    query: str | None = Field(None, max_length=MAX_QUERY_CHARS, description="One query text.")
    queries: list[str] | None = Field(None, min_length=1, max_length=MAX_BATCH,
                                      description=f"A batch of query texts (at most {MAX_BATCH}).")
    k: int = Field(10, ge=1, le=MAX_K, description="Hits per query.")
    index: str | None = Field(None, description="Search this index alone.")
    indexes: list[str] | None = Field(None, min_length=1, description="Fuse these indexes (default: all served).")
    fuse: Literal["rrf"] | None = Field(None, description="Fuse several indexes with reciprocal rank fusion.")
    include_text: bool = Field(False, description="Add each hit's document text (read from the index's corpus).")

    @field_validator("queries")
    @classmethod
    def _each_query(cls, value):
        for i, text in enumerate(value or []):
            if len(text) > MAX_QUERY_CHARS:
                raise ValueError(f"query {i} has {len(text)} characters; at most {MAX_QUERY_CHARS}")
        return value

    @model_validator(mode="after")
    def _one_form(self):
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' (a string) or 'queries' (a list of strings)")
        for i, text in enumerate([self.query] if self.query is not None else self.queries):
            if not text.strip():
                raise ValueError("the query is empty" if self.query is not None else f"query {i} is empty")
        return self

    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries)


class Hit(BaseModel):
    id: str
    title: str
    score: float
    rank: int
    text: str | None = None


class QueryHits(BaseModel):
    query: str
    hits: list[Hit]


class SearchResponse(BaseModel):
    index: str = Field(description="The index searched, or the fusion, e.g. 'rrf(bm25+dense)'.")
    k: int
    results: list[QueryHits]


class IndexInfo(BaseModel):
    name: str
    kind: str | None
    model: str | None
    dims: int | None
    documents: int | None
    index_type: str | None
    approximate: bool
    ann_recall_at_10: float | None = Field(description="Recall@10 of the approximate search against exact "
                                                       "search, measured at build time; null when exact.")
    dataset: str | None
    path: str | None
    created: str | None


class IndexesResponse(BaseModel):
    fuse: str | None
    indexes: list[IndexInfo]


class Health(BaseModel):
    status: Literal["ok"]
    indexes: int


class ErrorResponse(BaseModel):
    detail: str


def _validation_message(errors) -> str:
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return f"field {where!r}: {msg}" if where else msg


def create_app(indexes: Mapping[str, Any] | IndexPool, fuse: str | None = None, **options):
    """A FastAPI app serving ``indexes`` (``{name: index folder or retriever}``, or an :class:`IndexPool`).

    Indexes are loaded here, once. Searches run in FastAPI's thread pool (``def`` endpoints), never on the
    event loop. Bad requests get a 4xx whose JSON ``detail`` is one line; a failure inside a search is a 500
    with its message, and the server keeps serving.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    import colmed

    pool = indexes if isinstance(indexes, IndexPool) else IndexPool(indexes, fuse=fuse, **options)
    app = FastAPI(title="colmed", version=colmed.__version__,
                  description="Search colmed indexes (BM25, dense, PLAID), alone or fused with RRF.")
    app.state.pool = pool
    if len(pool.indexes) > 1:
        # In the background: health, manifests and single-index searches answer meanwhile; a fused
        # request waits on the fusion lock until the kernels are ready.
        app.state.warm_up = threading.Thread(target=pool.warm_up, name="colmed-fusion-warm-up", daemon=True)
        app.state.warm_up.start()
    errors = {400: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        status = 400 if errs and errs[0].get("type") == "json_invalid" else 422
        return JSONResponse({"detail": _validation_message(errs)}, status_code=status)

    @app.exception_handler(ColmedError)
    async def _bad_input(request: Request, exc: ColmedError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception):
        return JSONResponse({"detail": f"search failed: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", indexes=len(pool.indexes))

    @app.get("/indexes", response_model=IndexesResponse)
    def list_indexes() -> IndexesResponse:
        return IndexesResponse(fuse=pool.fuse, indexes=[IndexInfo(**d) for d in pool.describe()])

    @app.post("/search", response_model=SearchResponse, response_model_exclude_none=True, responses=errors)
    async def search(request: SearchRequest) -> Response:
        # One hop to a worker thread for the search itself, and the reply serialised here: a plain ``def``
        # endpoint costs FastAPI several thread-pool hops per request (endpoint, response validation),
        # which on a small machine is a measurable share of a 16 ms dense query. The hits are already
        # the response schema's shape (IndexPool._hits), so validating them again would only repeat work.
        texts = request.texts()
        label, results = await run_in_threadpool(
            pool.search, texts, k=request.k, index=request.index, indexes=request.indexes, fuse=request.fuse,
            include_text=request.include_text)
        if request.include_text:  # a hit whose text is not on disk carries no "text" (as the schema says)
            results = [[{f: v for f, v in hit.items() if v is not None} for hit in hits] for hits in results]
        body = {"index": label, "k": request.k,
                "results": [{"query": q, "hits": hits} for q, hits in zip(texts, results)]}
        return Response(json.dumps(body, ensure_ascii=False, allow_nan=False), media_type="application/json")

    return app


def serve(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (loopback unless ``host`` says otherwise)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
