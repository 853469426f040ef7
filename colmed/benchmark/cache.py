"""Indexes and runs built once and cached under a benchmark's cache folder, keyed by content.

An index is keyed by (retriever identity, dataset fingerprint, index type); a run by (identity, index key,
dataset fingerprint, split, ``k``, queries hash, and the dataset's search options where it sets any). A
retriever's identity holds the sha256 of a local model's files, computed afresh on every benchmark, so
retraining into the same folder gives a new key instead of a stale cached run.

Example:
    >>> import pathlib, tempfile
    >>> model = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (model / "weights.bin").write_bytes(b"epoch 1")
    >>> before = content_hash(model)
    >>> _ = (model / "weights.bin").write_bytes(b"epoch 2")   # retrained in place, same size
    >>> content_hash(model) != before, content_hash("sentence-transformers/all-MiniLM-L6-v2")
    (True, None)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from colmed.benchmark.spec import BenchmarkConfig, RetrieverSpec


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def content_hash(path_or_name: str | Path) -> str | None:
    """Content hash of a local model file or folder (:func:`colmed.core.provenance.hash_path`); ``None``
    for a hub name. Read from disk on every call: a cache by path would hide a model retrained into the
    same folder."""
    from colmed.core.provenance import hash_path

    return hash_path(path_or_name)


def cache_key(*parts: Any) -> str:
    """A short stable key of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def build_options(spec: "RetrieverSpec", config: "BenchmarkConfig") -> dict:
    """The ``build_index`` options of one retriever under a benchmark config."""
    if spec.kind == "bm25":
        return dict(spec.options)
    if spec.kind == "dense":
        return {"model": spec.target, "index_type": config.index_type, "batch_size": config.batch_size,
                "device": config.device, **spec.options}
    if spec.kind == "colbert":
        return {"model": spec.target, "batch_size": config.batch_size, "device": config.device, **spec.options}
    return {}


def cached_path(folder: Path, name: str, key: str, suffix: str = "") -> Path:
    """``<folder>/<name>-<key><suffix>``, or an existing entry with the same key under another retriever
    name: the key is the content, the name only labels the file, so renaming a retriever recomputes nothing."""
    path = folder / f"{safe_name(name)}-{key}{suffix}"
    if not path.exists() and folder.is_dir():
        same = sorted(p for p in folder.glob(f"*-{key}{suffix}") if not p.name.startswith("."))
        if same:
            return same[0]
    return path


def get_run(spec: "RetrieverSpec", dataset, config: "BenchmarkConfig", cache_dir: Path,
            log: Callable[[str], None] = _stderr, identity: dict | None = None) -> tuple[dict | None, dict]:
    """The run of ``spec`` on ``dataset`` (cached), and a cell info dict (cache status, sidecar, index).

    ``identity`` is ``spec.identity()`` when the caller already computed it (hashing a model once per benchmark).
    """
    from colmed.benchmark.datasets import dataset_search_options
    from colmed.eval.protocol import queries_hash

    identity = spec.identity() if identity is None else identity
    family = spec.kind
    if spec.kind == "index":
        manifest = spec.index_manifest()
        family = manifest.kind
        if manifest.dataset.get("fingerprint") != dataset.fingerprint:
            built_over = manifest.dataset.get("name") or "another corpus"
            if built_over == dataset.name:  # the same dataset, other content: its results would be wrong
                from colmed.core.errors import InputError

                raise InputError(f"index {spec.target} was built over another copy or split of {dataset.name} "
                                 f"(dataset fingerprint {str(manifest.dataset.get('fingerprint'))[:12]}, this "
                                 f"one {dataset.fingerprint[:12]}); rebuild it with colmed index", field="retriever")
            reason = f"index {spec.target} was built over {built_over}, not this copy of {dataset.name}"
            return None, {"status": "not applicable", "reason": reason}
        index_dir = Path(spec.target)
        index_key = None  # the identity already names the index (resolved path, manifest)
    else:
        index_key = cache_key(identity, dataset.fingerprint, config.index_type if spec.kind == "dense" else None)
        index_dir = cached_path(cache_dir / "indexes" / safe_name(dataset.name), spec.name, index_key)
    search_options = dataset_search_options(family, dataset.name)
    # Keyed by content, not by where --out points, so a relative and an absolute --out share the cache.
    # Search options join the key only where a dataset sets any, so every other cached run stays valid.
    run_key = cache_key(identity, index_key, dataset.fingerprint, dataset.split, config.k,
                        queries_hash(dataset.queries), *([search_options] if search_options else []))
    run_path = cached_path(cache_dir / "runs" / safe_name(dataset.name), spec.name, run_key, ".trec")
    cached = _cached_run(run_path, run_key, index_dir)
    if cached is not None:
        return cached
    # Two benchmarks sharing this cache may reach the same uncached entry together: the second waits for the
    # first's index and run instead of failing on the index's writer lock, then reads them from the cache. The
    # lock is keyed by content, as the entries are: the same model under another retriever name is one entry.
    with _entry_lock(cache_dir, index_key or str(index_dir.resolve()), spec.name, dataset.name, log):
        if index_key is not None:  # what the process we waited for wrote, under its retriever name
            index_dir = cached_path(cache_dir / "indexes" / safe_name(dataset.name), spec.name, index_key)
        run_path = cached_path(cache_dir / "runs" / safe_name(dataset.name), spec.name, run_key, ".trec")
        cached = _cached_run(run_path, run_key, index_dir)
        if cached is not None:
            return cached
        return _build_and_search(spec, dataset, config, index_dir, run_path, run_key, identity, family,
                                 search_options, log)


def _cached_run(run_path: Path, run_key: str, index_dir: Path) -> tuple[dict, dict] | None:
    from colmed.data.runs import read_trec
    from colmed.eval.protocol import read_sidecar

    sidecar = read_sidecar(run_path) if run_path.is_file() else None
    if sidecar and sidecar.get("cache_key") == run_key:
        run = {} if sidecar.get("empty_run") else read_trec(run_path)
        return run, {"status": "cached", "run_path": str(run_path), "sidecar": sidecar, "index_dir": str(index_dir)}
    return None


@contextlib.contextmanager
def _entry_lock(cache_dir: Path, entry: str, name: str, dataset: str, log: Callable[[str], None]):
    """Hold the cache's lock for one index (``entry``: its content key, or a user index's path) and every run
    searched on it, waiting while another process holds it. The lock lives in the cache's own ``.locks``
    folder, never beside a user's index."""
    from filelock import FileLock, Timeout

    locks = Path(cache_dir) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{cache_key(entry)}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"{dataset}: waiting for another colmed process building or searching {name} in this cache")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _build_and_search(spec, dataset, config, index_dir: Path, run_path: Path, run_key: str, identity: dict,
                      family: str, search_options: dict, log: Callable[[str], None]) -> tuple[dict, dict]:
    import colmed.indexes.base as index_base
    from colmed.data.runs import read_trec
    from colmed.eval.protocol import read_sidecar
    from colmed.indexes.search import search_queries, write_run

    built = False
    if not index_dir.exists():
        log(f"{dataset.name}: building {spec.kind} index for {spec.name} ({len(dataset.corpus):,} docs)")
        index_base.build_index(spec.kind, dataset, index_dir, **build_options(spec, config))
        built = True
    manifest = index_base.IndexManifest.read(index_dir)
    load_opts = {"device": config.device} if family in ("dense", "colbert") else {}
    retriever = index_base.load_index(index_dir, **load_opts, **search_options)
    log(f"{dataset.name}: searching {len(dataset.queries):,} queries with {spec.name}")
    t0 = time.perf_counter()
    run = search_queries(retriever, dataset.queries, k=config.k, progress=True)
    seconds = time.perf_counter() - t0
    del retriever  # free the model/index before the next retriever loads
    source_info = {"queries_source": dataset.source, "dataset": dataset.name,
                   "dataset_fingerprint": dataset.fingerprint, "split": dataset.split, "qrels_hash": dataset.qrels_hash}
    timing = {"queries": len(dataset.queries), "seconds": round(seconds, 3),
              "qps": round(len(dataset.queries) / max(seconds, 1e-9), 2)}
    empty = not any(run.values())
    write_run(run, manifest, dataset.queries, source_info, run_path, config.k, timing=timing, tag=spec.name,
              extra={"cache_key": run_key, "retriever": spec.name, "identity": identity, "empty_run": empty,
                     **({"search_options": search_options} if search_options else {})})
    # Evaluate what was stored (6-decimal scores), so a fresh and a cached run give identical numbers.
    run = {} if empty else read_trec(run_path)
    return run, {"status": "built index + searched" if built else "searched (index reused)", "run_path": str(run_path),
                 "sidecar": read_sidecar(run_path), "index_dir": str(index_dir)}
