"""The one place colmed calls colbert-ai: PLAID indexing and PLAID search, in-process.

colbert-ai is colmed's PLAID engine (k-means, residual compression, IVF, candidate generation and
scoring). Training is sentence-transformers' (:mod:`colmed.colbert.training`), and a
sentence-transformers ``MultiVectorEncoder`` encodes documents and queries for its own indexes: the
embeddings are handed to colbert-ai (:class:`_EncoderCheckpoint` stands in for colbert-ai's model).
colbert-ai still encodes with its own model for colbert-ai/Stanford checkpoints.

Every call here

* applies the compatibility fixes below (transformers-5 init fix, one C++ extension cache),
* runs inside its own ``with Run().context(...)`` with ``nranks=1`` and ``avoid_fork_if_possible`` so that
  nothing is forked (a crashed forked child hangs colbert-ai's parent forever) and colbert-ai's global run
  stack is back to where it was when the call returns, whatever happens,
* gives colbert-ai a private scratch ``root`` so it never writes ``experiments/`` into the working dir,
* restores ``CUDA_VISIBLE_DEVICES``, which colbert-ai's in-process launcher overwrites.

Higher layers (:mod:`colmed.indexes.plaid`) speak plain Python types.

Example (not run as a doctest: it needs a trained ColBERT checkpoint and colbert-ai's C++ extensions,
compiled once in ~2.5 min; ``tests/test_colbert.py`` runs this path on a tiny model):
    >>> from colmed.colbert.adapter import PlaidSearcher, build_plaid   # doctest: +SKIP
    >>> stats = build_plaid("ckpt/", ["aspirin lowers fever", "insulin for diabetes"], "idx/plaid",
    ...                     nbits=2, doc_maxlen=180, index_bsize=32, scratch="idx/.scratch")  # doctest: +SKIP
    >>> searcher = PlaidSearcher("idx/plaid", "ckpt/", num_docs=2)                            # doctest: +SKIP
    >>> searcher.search_batch(["fever medicine"], k=1, ncells=2, ndocs=1024,
    ...                       centroid_score_threshold=0.45)                                  # doctest: +SKIP
    [([0], [12.3])]
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from colmed.core.errors import InputError
from colmed.core.system import available_cores


# ---- Compatibility fixes for colbert-ai 0.2.22 (transformers 5, CPU, one process) ----
# Nothing here edits site-packages. Each fix is either
# applied once and idempotently (:func:`apply_compat`) or scoped to one call with a context manager, so that
# colbert-ai behaves as upstream outside colmed's calls.
#
# The fixes:
#
# * **transformers 5 weight init.** colbert-ai's ``HF_ColBERT.__init__`` calls ``init_weights()`` where
#   transformers 5 needs ``post_init()`` (which records ``all_tied_weights_keys``); loading fails with
#   ``'HF_ColBERT' object has no attribute 'all_tied_weights_keys'``. :func:`apply_compat` wraps
#   colbert-ai's ``class_factory`` so the class it builds routes its first ``init_weights()`` through
#   ``post_init()``.
# * **C++ extensions compile once.** colbert-ai compiles its CPU kernels with ``torch.utils.cpp_extension``
#   on first use (~2.5 min on 2 cores); :func:`torch_extensions_dir` pins one cache directory.
# * **Git metadata.** colbert-ai stamps saved configs with git details of the working directory and
#   crashes inside a git repository with no commits or a detached HEAD; :func:`apply_compat` makes that
#   stamp best-effort (host, time and command line are still recorded).
# * **Double encoding on small corpora.** When the k-means sample is the whole collection (< ~30k passages)
#   PLAID encodes every passage twice. :func:`reuse_sample_embeddings` hands the sample's embeddings to the
#   indexing pass when it asks for exactly the same passages.
# * **k-means on a busy machine.** colbert-ai's ``compute_faiss_kmeans`` runs faiss with every core. faiss
#   assigns points in thousands of short OpenMP regions (one BLAS block and one reduction each, a few ms),
#   and each region waits for its slowest thread: when another process holds one of the cores, every
#   region waits a scheduler slice for the descheduled thread while the other spins. On 2 cores with other
#   work running, 2 threads took 2-2.5x the wall time of 1 thread and twice its CPU time (bench/plaid_build.py
#   ``kmeans``). :func:`faiss_kmeans` runs the same ``faiss.Kmeans`` (same sample, iterations, seed) with
#   the cores that are free when it starts (:func:`kmeans_threads`) and records what it used.
#
# Example:
#     >>> from colmed.colbert.adapter import torch_extensions_dir
#     >>> torch_extensions_dir().name                          # doctest: +SKIP
#     'torch_extensions'

_APPLIED = False


def torch_extensions_dir() -> Path:
    """Point ``TORCH_EXTENSIONS_DIR`` at one shared cache (unless the user already set it) and return it.

    Compiled kernels are keyed by torch version and source hash inside, so one directory serves all runs.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "colmed" / "torch_extensions"
    path = Path(os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _needs_post_init() -> bool:
    from transformers import PreTrainedModel

    # transformers 5 computes tied-weight bookkeeping in post_init(); 4.x does not need the fix.
    return hasattr(PreTrainedModel, "get_expanded_tied_weights_keys")


def _fix_hf_colbert_class(cls: type) -> type:
    """Make ``cls.__init__``'s call to ``init_weights()`` run ``post_init()`` first (once per instance)."""
    if cls.__dict__.get("_colmed_compat"):
        return cls
    base_init_weights = cls.init_weights

    def init_weights(self):
        if not self.__dict__.get("_colmed_post_init_started"):
            # post_init() records all_tied_weights_keys etc., then calls init_weights() again (below).
            self.__dict__["_colmed_post_init_started"] = True
            self.post_init()
            return
        base_init_weights(self)

    cls.init_weights = init_weights
    cls._colmed_compat = True
    return cls


def _wrap_class_factory(factory: Callable[[str], type]) -> Callable[[str], type]:
    if getattr(factory, "_colmed_compat", False):
        return factory

    def class_factory(name_or_path):
        return _fix_hf_colbert_class(factory(str(name_or_path)))

    class_factory._colmed_compat = True
    class_factory.__wrapped__ = factory
    return class_factory


def _tolerant_metadata(original: Callable[[], dict]) -> Callable[[], dict]:
    if getattr(original, "_colmed_compat", False):
        return original

    def get_metadata_only():
        try:
            return original()
        except Exception:  # GitPython: no commits yet (ValueError), detached HEAD (TypeError), ...
            import socket
            import sys
            import time

            from colbert.utils.utils import dotdict

            return dotdict(hostname=socket.gethostname(), cmd=" ".join(sys.argv),
                           current_datetime=time.strftime("%b %d, %Y ; %l:%M%p %Z (%z)"))

    get_metadata_only._colmed_compat = True
    return get_metadata_only


def apply_compat() -> None:
    """Apply the process-wide, idempotent fixes: extension cache dir, transformers-5 init, git metadata."""
    global _APPLIED
    torch_extensions_dir()
    if _APPLIED:
        return
    import importlib

    import colbert  # noqa: F401  (utility.* must be imported after colbert: they import each other)

    # Each of these modules imported the function by name and holds its own reference.
    modules = [importlib.import_module(name) for name in (
        "utility.utils.save_metadata", "colbert.data.examples", "colbert.data.ranking",
        "colbert.infra.config.base_config", "colbert.infra.config.core_config")]
    safe = _tolerant_metadata(modules[0].get_metadata_only)
    for module in modules:
        module.get_metadata_only = safe
    if _needs_post_init():
        import colbert.modeling.base_colbert as base_colbert
        import colbert.modeling.hf_colbert as hf_colbert

        wrapped = _wrap_class_factory(hf_colbert.class_factory)
        hf_colbert.class_factory = wrapped
        # base_colbert imported the name directly, so it holds its own reference.
        base_colbert.class_factory = wrapped
    _APPLIED = True


@contextlib.contextmanager
def reuse_sample_embeddings() -> Iterator[dict[str, int]]:
    """Within the block, encoding the same passage list twice in a row reuses the first result.

    colbert-ai's indexer encodes its k-means sample, then encodes every chunk. On a corpus small enough
    that the sample is the whole collection in one chunk, the two calls receive identical lists, and the
    model is deterministic in inference mode, so the second call can take the first call's tensors. Any
    other call pattern misses the one-entry cache and encodes as usual. Yields counters (``hits``,
    ``encoded_passages``) for the build stats.
    """
    from colbert.indexing.collection_encoder import CollectionEncoder

    original = CollectionEncoder.encode_passages
    cache: dict[str, object] = {}
    counters = {"hits": 0, "encoded_passages": 0}

    def encode_passages(self, passages):
        key = (id(self), len(passages), hash(tuple(passages)))
        if cache.get("key") == key:
            counters["hits"] += 1
            embs, doclens = cache.pop("value")
            cache.clear()
            return embs, doclens
        embs, doclens = original(self, passages)
        counters["encoded_passages"] += len(passages)
        cache.clear()
        if embs is not None:
            cache["key"], cache["value"] = key, (embs, list(doclens))
        return embs, doclens

    CollectionEncoder.encode_passages = encode_passages
    try:
        yield counters
    finally:
        CollectionEncoder.encode_passages = original
        cache.clear()


def runnable_elsewhere(samples: int = 5, interval: float = 0.05) -> float | None:
    """Threads of other processes ready to run right now (median of a few reads), or None where unknown.

    Linux's ``/proc/loadavg`` counts runnable threads system-wide at this instant (its 4th field, before
    the slash); the calling thread is one of them. The 1-minute load average would lag by a minute and
    count this process's own encoding threads, which have just finished.
    """
    import statistics
    import time

    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


def kmeans_threads(requested: int | None = None) -> tuple[int, str]:
    """The faiss thread count for k-means and why: ``requested`` if given, else the cores free right now.

    Free cores = cores available to this process minus threads of other processes ready to run (at least 1).
    With every core taken by something else, one thread is the fastest choice: it never waits for a
    descheduled sibling (see the module notes).
    """
    if requested is not None:
        if requested < 1:
            raise InputError(f"kmeans_threads must be >= 1, got {requested}", field="kmeans_threads")
        return requested, "requested"
    cores = available_cores()
    others = runnable_elsewhere()
    if others is None:
        return cores, f"{cores} cores available, load unknown"
    free = max(1, min(cores, cores - int(round(others))))
    return free, f"{cores} cores available, {others:g} threads of other processes runnable"


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP thread count for the block (faiss has its own OpenMP runtime; torch's is untouched)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def omp_wait_policy() -> str:
    """The OpenMP wait policy faiss's runtime read when it loaded (the environment; libgomp's default: spin
    briefly, then sleep)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() or "default"


def faiss_kmeans(sample: "torch.Tensor", k: int, niter: int, *, threads: int | None = None,
                 max_points_per_centroid: int = 256, seed: int = 123) -> tuple["torch.Tensor", dict[str, Any]]:
    """colbert-ai's ``compute_faiss_kmeans`` (same ``faiss.Kmeans`` call and seed) with a chosen thread count.

    Returns the centroids and what was used: ``threads`` (and why), ``points`` (faiss subsamples to
    ``k * max_points_per_centroid``; 256 is faiss's and so colbert-ai's default), ``niter``, ``wait_policy``
    and ``seconds``.
    """
    import time

    import faiss

    n_threads, reason = kmeans_threads(threads)
    data = sample.float().numpy()
    kmeans = faiss.Kmeans(int(data.shape[1]), int(k), niter=int(niter), gpu=torch.cuda.is_available(),
                          verbose=False, seed=seed, max_points_per_centroid=int(max_points_per_centroid))
    started = time.perf_counter()
    with faiss_threads(n_threads):
        kmeans.train(data)
    used = {"threads": n_threads, "threads_reason": reason, "niter": int(niter), "k": int(k),
            "sample_embeddings": int(data.shape[0]),
            "points": int(min(data.shape[0], k * max_points_per_centroid)),
            "max_points_per_centroid": int(max_points_per_centroid), "seed": seed,
            "wait_policy": omp_wait_policy(), "seconds": round(time.perf_counter() - started, 3)}
    return torch.from_numpy(kmeans.centroids), used


def resolve_device(device: str | None) -> str:
    """colbert-ai decides CPU vs GPU at import time from the visible GPUs; check a request against that."""
    has_gpu = torch.cuda.device_count() > 0
    if device in (None, "", "auto"):
        return "cuda" if has_gpu else "cpu"
    if device.startswith("cuda"):
        if not has_gpu:
            raise InputError(f"device {device!r} requested but no CUDA GPU is visible", field="device")
        return "cuda"
    if device == "cpu":
        if has_gpu:
            # colbert-ai reads torch.cuda.device_count() at import; it cannot be told to ignore a GPU later.
            raise InputError("colbert-ai always uses a visible GPU; run with CUDA_VISIBLE_DEVICES= to force CPU",
                             field="device")
        return "cpu"
    raise InputError(f"unknown device {device!r}; use cpu, cuda or leave it unset", field="device")


@contextlib.contextmanager
def _colbert_run(scratch: str | Path, **run_settings) -> Iterator[Any]:
    """One isolated colbert-ai run context: in-process, single rank, private scratch root."""
    apply_compat()
    from colbert.infra import Run, RunConfig

    # colbert-ai only writes under root when code we do not call asks it to; point it somewhere private anyway.
    run_config = RunConfig(nranks=1, avoid_fork_if_possible=True, root=str(scratch), experiment="colmed",
                           name="run", amp=torch.cuda.is_available(), **run_settings)
    saved_cuda_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with Run().context(run_config), warnings.catch_warnings():
            if not torch.cuda.is_available():
                # colbert-ai hard-codes torch.cuda.amp in its inference Checkpoint; on CPU that only warns.
                warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\..*")
                warnings.filterwarnings("ignore", message=r".*CUDA is not available.*")
            yield run_config
    finally:
        if saved_cuda_env is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda_env


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


@contextlib.contextmanager
def _quiet(log: io.TextIOBase | None, stderr: bool = False) -> Iterator[None]:
    """Send colbert-ai's chatty prints (configs, per-step scores) to ``log`` instead of the terminal.

    ``stderr=True`` also captures progress bars, for steps too short to need them (loading an index).
    """
    sink = log if log is not None else io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(sink))
        if stderr:
            stack.enter_context(contextlib.redirect_stderr(sink))
        yield


# --------------------------------------------------------------------------------------------- indexing


DocumentEncoder = Callable[[list[str]], "list[torch.Tensor]"]
QueryEncoder = Callable[[list[str]], "list[torch.Tensor]"]


class _EncoderCheckpoint:
    """Stands in for colbert-ai's ``Checkpoint`` (its BERT + ``linear`` model) when colmed's encoder encodes.

    colbert-ai's indexer asks its checkpoint for ``docFromText(passages, keep_dims="flatten")``: all token
    vectors of the batch stacked, plus each passage's token count. Here they come from ``encode_documents``
    (the model's own document conventions), so colbert-ai only clusters, compresses and searches.
    """

    def __init__(self, encode_documents: DocumentEncoder | None = None):
        from colbert.modeling.colbert import ColBERT

        self._encode_documents = encode_documents
        # colbert-ai's model loads its scoring kernels (segmented MaxSim on CPU) when built; this stand-in must too.
        ColBERT.try_load_torch_extensions(torch.cuda.is_available())

    def docFromText(self, docs, bsize=None, keep_dims=True, to_cpu=False, showprogress=False, **_ignored):  # noqa: N802
        if keep_dims != "flatten" or self._encode_documents is None:
            raise RuntimeError("colmed's encoder checkpoint only serves colbert-ai's indexing (keep_dims='flatten')")
        embeddings = self._encode_documents(list(docs))
        doclens = [int(e.size(0)) for e in embeddings]
        return torch.cat(embeddings).float(), doclens

    def queryFromText(self, *args, **kwargs):  # noqa: N802
        raise RuntimeError("queries are encoded by colmed's encoder and passed to the ranker as tensors")

    def cuda(self):
        return self

    def cpu(self):
        return self


def _encoder_checkpoint(encode_documents: DocumentEncoder | None = None):
    def factory(name, colbert_config=None, verbose=3):
        return _EncoderCheckpoint(encode_documents)

    return factory


@contextlib.contextmanager
def _kmeans_hook(threads: int | None, max_points_per_centroid: int) -> Iterator[dict[str, Any]]:
    """Within the block colbert-ai's indexer trains its centroids with :func:`faiss_kmeans`; yields what it used."""
    import colbert.indexing.collection_indexer as collection_indexer

    used: dict[str, Any] = {}

    def compute_faiss_kmeans(dim, num_partitions, kmeans_niters, shared_lists, return_value_queue=None):
        centroids, settings = faiss_kmeans(shared_lists[0][0], num_partitions, kmeans_niters, threads=threads,
                                           max_points_per_centroid=max_points_per_centroid)
        used.update(settings)
        if return_value_queue is not None:
            return_value_queue.put(centroids)
        return centroids

    with _patched(collection_indexer, "compute_faiss_kmeans", compute_faiss_kmeans):
        yield used


@contextlib.contextmanager
def _phase_timer() -> Iterator[dict[str, float]]:
    """Seconds spent in each of colbert-ai's indexing phases within the block.

    ``encode`` (every ``encode_passages`` call, sample included), ``kmeans``, ``compress`` (the codec's
    residual statistics and compressing each chunk) and ``ivf`` (``finalize``: the centroid -> passage lists).
    """
    import time

    from colbert.indexing.codecs.residual import ResidualCodec
    from colbert.indexing.collection_encoder import CollectionEncoder
    from colbert.indexing.collection_indexer import CollectionIndexer
    import colbert.indexing.collection_indexer as collection_indexer

    seconds = {"encode": 0.0, "kmeans": 0.0, "compress": 0.0, "ivf": 0.0}

    def timed(phase, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - started
        return wrapper

    targets = [(CollectionEncoder, "encode_passages", "encode"),
               (collection_indexer, "compute_faiss_kmeans", "kmeans"),
               (CollectionIndexer, "_compute_avg_residual", "compress"), (ResidualCodec, "compress", "compress"),
               (CollectionIndexer, "finalize", "ivf")]
    with contextlib.ExitStack() as stack:
        for owner, name, phase in targets:
            stack.enter_context(_patched(owner, name, timed(phase, getattr(owner, name))))
        yield seconds
    for phase in seconds:
        seconds[phase] = round(seconds[phase], 3)


def build_plaid(checkpoint: str, passages: list[str], index_path: Path, *, nbits: int, doc_maxlen: int,
                index_bsize: int, scratch: Path, kmeans_niters: int = 4, log: io.TextIOBase | None = None,
                reuse_sample_encodings: bool = True, encode_documents: DocumentEncoder | None = None,
                dim: int | None = None, query_maxlen: int | None = None, kmeans_threads: int | None = None,
                kmeans_max_points_per_centroid: int = 256) -> dict[str, Any]:
    """Build a PLAID index of ``passages`` (pid = list position) at ``index_path`` (must not exist).

    ``encode_documents`` (texts -> one ``(tokens, dim)`` tensor each; ``dim`` and ``query_maxlen`` given
    with it) makes colbert-ai index those embeddings instead of encoding with its own model: colbert-ai
    then never loads ``checkpoint``, which is only recorded. Without it, colbert-ai encodes with the
    colbert-ai checkpoint ``checkpoint`` (its markers, [MASK] expansion and ``doc_maxlen``).
    ``reuse_sample_encodings=False`` keeps colbert-ai's upstream behaviour (encode the k-means sample, then
    encode everything again); it exists to measure the saving.
    ``kmeans_threads`` (default: the cores free when k-means starts) and ``kmeans_max_points_per_centroid``
    (faiss's subsample cap) go to :func:`faiss_kmeans`; the returned ``kmeans`` dict records what was used,
    ``phase_seconds`` where the time went.
    """
    index_path = Path(index_path)
    if index_path.exists():
        raise InputError("PLAID index folder already exists", path=index_path)
    with _colbert_run(scratch):
        import colbert.indexing.collection_indexer as collection_indexer
        from colbert import Indexer
        from colbert.infra import ColBERTConfig

        own = ({"dim": dim, "query_maxlen": query_maxlen, "checkpoint": str(checkpoint)}
               if encode_documents is not None else {})
        config = ColBERTConfig(nbits=nbits, doc_maxlen=doc_maxlen, index_bsize=index_bsize,
                               kmeans_niters=kmeans_niters, index_path=str(index_path), nranks=1,
                               avoid_fork_if_possible=True, **own)
        reuse = reuse_sample_embeddings() if reuse_sample_encodings else _count_encodings()
        hooked = (_patched(collection_indexer, "Checkpoint", _encoder_checkpoint(encode_documents))
                  if encode_documents is not None else contextlib.nullcontext())
        # The k-means hook goes on before the timer so the timer wraps colmed's k-means, not colbert-ai's.
        with _quiet(log), reuse as counters, hooked, \
                _kmeans_hook(kmeans_threads, kmeans_max_points_per_centroid) as kmeans, _phase_timer() as phases:
            indexer = Indexer(checkpoint=str(checkpoint), config=config, verbose=1)
            indexer.index(name=index_path.name, collection=list(passages), overwrite=False)
            index_config = indexer.config
    return {"encoded_passages": counters["encoded_passages"], "reused_sample_encodings": counters["hits"],
            "query_maxlen": index_config.query_maxlen, "dim": index_config.dim, "kmeans": kmeans,
            "phase_seconds": phases}


@contextlib.contextmanager
def _count_encodings() -> Iterator[dict[str, int]]:
    from colbert.indexing.collection_encoder import CollectionEncoder

    counters = {"hits": 0, "encoded_passages": 0}
    original = CollectionEncoder.encode_passages

    def encode_passages(self, passages):
        counters["encoded_passages"] += len(passages)
        return original(self, passages)

    with _patched(CollectionEncoder, "encode_passages", encode_passages):
        yield counters


# --------------------------------------------------------------------------------------------- search


class PlaidSearcher:
    """colbert-ai's ``Searcher`` over one PLAID index, with the search knobs passed on every call.

    colbert-ai's Searcher fills ``ncells``/``ndocs``/``centroid_score_threshold`` into its config on its first
    call and keeps them; setting them explicitly before each call makes every call use what it asks for.
    """

    def __init__(self, index_path: str | Path, checkpoint: str, num_docs: int, *, scratch: str | Path | None = None,
                 query_maxlen: int | None = None, log: io.TextIOBase | None = None,
                 encode_queries: QueryEncoder | None = None):
        self.index_path = Path(index_path)
        self._scratch = Path(scratch) if scratch else self.index_path.parent / ".colbert-scratch"
        self._encode_queries = encode_queries
        with _colbert_run(self._scratch):
            import colbert.searcher as colbert_searcher
            from colbert import Searcher
            from colbert.infra import ColBERTConfig

            overrides = {"query_maxlen": query_maxlen} if query_maxlen else {}
            # Searcher insists on a collection but only ranks pids; a placeholder keeps the texts out of memory.
            placeholder = [""] * num_docs
            hooked = (_patched(colbert_searcher, "Checkpoint", _encoder_checkpoint())
                      if encode_queries is not None else contextlib.nullcontext())
            with _quiet(log, stderr=True), hooked:
                self._searcher = Searcher(index=str(self.index_path.resolve()), checkpoint=str(checkpoint),
                                          collection=placeholder, config=ColBERTConfig(**overrides), verbose=0)
        self.dim = self._searcher.config.dim
        self.query_maxlen = self._searcher.config.query_maxlen

    @property
    def raw(self):
        """The wrapped ``colbert.Searcher`` (used by the overhead benchmark)."""
        return self._searcher

    def encode(self, texts: Sequence[str]) -> "torch.Tensor | list[torch.Tensor]":
        """Query embeddings: colbert-ai's ``(n, query_maxlen, dim)`` tensor, or one tensor per query from
        colmed's encoder."""
        if self._encode_queries is not None:
            return self._encode_queries(list(texts))
        with _colbert_run(self._scratch):
            return self._searcher.encode(list(texts))

    def search_batch(self, texts: Sequence[str], k: int, *, ncells: int, ndocs: int,
                     centroid_score_threshold: float) -> list[tuple[list[int], list[float]]]:
        """Encode ``texts`` in one batch, then rank each; returns ``[(pids, scores)]`` per text."""
        if not texts:
            return []
        Q = self.encode(texts)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with _colbert_run(self._scratch):
            self._searcher.configure(ncells=ncells, ndocs=ndocs, centroid_score_threshold=centroid_score_threshold)
            out = []
            for i in range(len(Q)):
                query = Q[i].unsqueeze(0).to(device) if isinstance(Q, list) else Q[i:i + 1]
                pids, _, scores = self._searcher.dense_search(query, k=k)
                out.append((list(pids), [float(s) for s in scores]))
        return out


# --------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(out_dir: str | Path, encoder_dir: str | Path, projection: torch.Tensor,
                    settings: dict[str, Any]) -> None:
    """Write a colbert-ai checkpoint as colbert-ai's own ``BaseColBERT.save`` does: ``HF_ColBERT`` weights
    (the encoder in the transformers folder ``encoder_dir``, ``linear.weight`` = ``projection``), the tokenizer,
    and ``artifact.metadata`` from ``ColBERTConfig(**settings)`` (used by :mod:`colmed.colbert.export`)."""
    apply_compat()
    import colbert.modeling.hf_colbert as hf_colbert
    from colbert.infra import ColBERTConfig
    from transformers import AutoTokenizer

    config = ColBERTConfig(**settings)
    try:
        model_class = hf_colbert.class_factory(str(encoder_dir))
    except (ValueError, AssertionError) as e:  # an architecture colbert-ai cannot wrap
        raise InputError(f"colbert-ai cannot load this encoder: {str(e).splitlines()[0][:200]}",
                         field="model") from None
    model = model_class.from_pretrained(str(encoder_dir), colbert_config=config)
    with torch.no_grad():
        model.linear.weight.copy_(projection.to(model.linear.weight.dtype))
    model.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(encoder_dir)).save_pretrained(str(out_dir))
    config.save_for_checkpoint(str(out_dir))


def checkpoint_encodings(checkpoint: str | Path, queries: Sequence[str], documents: Sequence[str], *,
                         scratch: str | Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """How colbert-ai's ``Checkpoint`` encodes: one float32 ``(tokens, dim)`` tensor per query (every
    [MASK]-expanded position) and per document (padding and skiplisted tokens dropped, as indexed)."""
    with _colbert_run(scratch), _quiet(None, stderr=True):
        from colbert.infra import ColBERTConfig
        from colbert.modeling.checkpoint import Checkpoint

        model = Checkpoint(str(checkpoint), colbert_config=ColBERTConfig(), verbose=0)
        Q = model.queryFromText(list(queries), bsize=32)
        D, doclens = model.docFromText(list(documents), bsize=32, keep_dims="flatten")
    return [q.float().cpu() for q in Q], list(D.float().cpu().split(doclens))


def colbert_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("colbert-ai")
    except metadata.PackageNotFoundError:  # pragma: no cover - colbert-ai is a hard dependency
        return "unknown"


__all__ = ["PlaidSearcher", "build_plaid", "checkpoint_encodings", "colbert_version", "resolve_device",
           "save_checkpoint"]
