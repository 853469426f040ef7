"""The public Python API: the same operations as the CLI, one function each (``import colmed``).

Every CLI command is a thin translation of its flags into one of these calls, so a notebook and the
command line give the same numbers. Heavy packages (torch, faiss, colbert-ai) load only when used.

Example (the bundled sample, BM25 in memory, evaluated the way the dataset's registry entry says):
    >>> import colmed
    >>> ds = colmed.load_dataset(colmed.SAMPLE_DATASET)
    >>> bm25 = colmed.build_index("bm25", ds)
    >>> run = colmed.search(bm25, ds.queries, k=10)
    >>> scores = colmed.evaluate(ds, run)
    >>> sorted(scores)
    ['map@100', 'mrr@10', 'ndcg@10', 'recall@100']
    >>> 0.5 < scores["ndcg@10"] <= 1.0
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

SAMPLE_DATASET = str(Path(__file__).resolve().parent / "data" / "sample_medical")

Run = dict[str, dict[str, float]]


def load_dataset(name_or_path: str | Path, split: str = "test", require_corpus: bool = True):
    """A BEIR folder, a registered benchmark name or a hub dataset as a :class:`~colmed.data.datasets.RetrievalDataset`."""
    from colmed.data.datasets import load_dataset as _load

    return _load(name_or_path, split=split, require_corpus=require_corpus)


def _as_dataset(dataset):
    return dataset if hasattr(dataset, "corpus") else load_dataset(dataset)


def build_index(kind: str, dataset, out: str | Path | None = None, *, overwrite: bool = False, **settings):
    """Index ``dataset``'s corpus with ``kind`` (``bm25``, ``dense``, ``colbert``) and return the retriever.

    With ``out=None`` the index lives in memory (BM25 and dense); with ``out`` it is written there atomically
    (every kind; PLAID indexes exist only on disk) and opened from it. Unknown settings are refused.
    The retriever's ``manifest`` says what it is (:class:`~colmed.indexes.base.IndexManifest`).
    """
    from colmed.core.errors import InputError
    from colmed.indexes.base import BUILDERS, IN_MEMORY_BUILDERS, _resolve, build_index as _build, load_index as _open

    dataset = _as_dataset(dataset)
    if out is not None:
        _build(kind, dataset, out, overwrite=overwrite, **settings)
        return _open(out)
    if kind not in IN_MEMORY_BUILDERS:
        if kind in BUILDERS:
            raise InputError(f"a {kind} index is built on disk only: pass out=DIR", field="out")
        raise InputError(f"unknown retriever kind {kind!r}; choose from {', '.join(BUILDERS)}", field="kind")
    if not dataset.corpus:
        raise InputError("empty corpus: nothing to index", path=dataset.source or dataset.name)
    retriever, manifest = _resolve(IN_MEMORY_BUILDERS[kind])(dataset, **settings)
    manifest.dataset = {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint}
    retriever.manifest = manifest
    return retriever


def load_index(index_dir: str | Path, **options):
    """Open any index folder colmed wrote (BM25, faiss, PLAID) as a retriever with ``search(queries, k)``."""
    from colmed.indexes.base import load_index as _open

    return _open(index_dir, **options)


def search(retriever, queries: Mapping[str, str], k: int = 100, *, progress: bool = False) -> Run:
    """Run ``queries`` (``{query_id: text}``) through ``retriever``: ``{query_id: {doc_id: score}}``."""
    from colmed.core.errors import InputError
    from colmed.indexes.search import search_queries

    if k <= 0:
        raise InputError(f"k must be a positive number of hits, got {k}", field="k")
    return search_queries(retriever, queries, k=k, progress=progress)


def evaluate(dataset, run: Mapping[str, Mapping[str, float]], metrics=None, *,
             exclude_self_hits: bool | None = None, per_query: bool = False) -> dict[str, Any]:
    """Score one run against ``dataset``'s qrels with ranx; the dataset's protocol applies by default.

    ``exclude_self_hits=None`` follows the registry (ArguAna: a query's own id is removed from its hits);
    pass ``False`` only to study the protocol itself.
    """
    from colmed.eval.evaluation import DEFAULT_METRICS, evaluate_run

    dataset = _as_dataset(dataset)
    return evaluate_run(dataset, run, tuple(metrics or DEFAULT_METRICS), per_query=per_query,
                        exclude_self_hits=exclude_self_hits)


def compare(dataset, runs: Mapping[str, Mapping[str, Mapping[str, float]]], metrics=None, *,
            stat_test: str = "student", max_p: float = 0.05, fuse: str | None = None,
            exclude_self_hits: bool | None = None):
    """Evaluate named runs on one dataset and test every pair (ranx ``compare``): a :class:`~colmed.eval.evaluation.Comparison`."""
    from colmed.eval.evaluation import DEFAULT_METRICS, compare_runs

    dataset = _as_dataset(dataset)
    return compare_runs(dataset, runs, tuple(metrics or DEFAULT_METRICS), stat_test=stat_test, max_p=max_p,
                        fuse=fuse, exclude_self_hits=exclude_self_hits, dataset_name=dataset.name)


def fuse(runs: list[Mapping[str, Mapping[str, float]]], method: str = "rrf", norm: str | None = None) -> Run:
    """Fuse runs with ranx (reciprocal rank fusion by default)."""
    from colmed.eval.evaluation import fuse_runs

    return fuse_runs(runs, method=method, norm=norm)


def generate(config=None, *, record_check=None, **settings) -> dict[str, Any]:
    """Generate training triplets (``colmed generate``); returns the manifest written to ``out``.

    ``config`` is a :class:`~colmed.data_gen.config.GenerateConfig` or a YAML path; ``settings`` override it.
    ``record_check`` runs on the records before they are written, e.g.
    ``colmed.eval.contamination.TrainingSetCheck(["../shared/beir/nfcorpus"], decontaminate=True)``.
    """
    from colmed.data_gen.config import GenerateConfig
    from colmed.data_gen.pipeline import TripletPipeline

    if isinstance(config, (str, Path)):
        config = GenerateConfig.from_yaml(config, **settings)
    elif config is None:
        config = GenerateConfig(**settings)
    elif settings:
        from dataclasses import replace

        config = replace(config, **settings)
    return TripletPipeline(config, record_check=record_check).run()


def train_dense(config=None, *, resume: bool = False, overwrite: bool = False, **settings):
    """Fine-tune a sentence-transformers bi-encoder on colmed triplets (``colmed train bi-encoder``)."""
    from colmed.bi_encoder.config import BiEncoderTrainingConfig
    from colmed.bi_encoder.train import train_bi_encoder

    return train_bi_encoder(_config(BiEncoderTrainingConfig, config, settings), resume=resume, overwrite=overwrite)


def train_colbert(config=None, *, resume: bool = False, overwrite: bool = False, **settings):
    """Fine-tune a ColBERT (sentence-transformers MultiVectorEncoder) on colmed triplets (``colmed train colbert``)."""
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert as _train

    return _train(_config(ColbertTrainingConfig, config, settings), resume=resume, overwrite=overwrite)


def _config(cls, config, settings):
    """A config of ``cls`` from a YAML path, an instance or nothing, with ``settings`` on top, checked by type."""
    from colmed.core.config import from_dict, from_yaml, to_dict

    if isinstance(config, (str, Path)):
        return from_yaml(cls, config, settings)
    if config is None:
        return from_dict(cls, settings)
    return from_dict(cls, {**to_dict(config), **settings}) if settings else config


def benchmark(config=None, **settings):
    """Run retrievers over benchmark datasets and compare them (``colmed benchmark``): a ``BenchmarkResult``."""
    from colmed.benchmark import BenchmarkConfig, run_benchmark

    return run_benchmark(_config(BenchmarkConfig, config, settings))
