"""colmed.eval: benchmark datasets, runs and ranx-based evaluation.

Public API (small on purpose, like ranx):

- :class:`~eval.data.RetrievalDataset`, :func:`~eval.data.load_dataset`
- :data:`~eval.registry.BENCHMARKS`, :func:`~eval.registry.get_spec`
- :func:`~eval.runs.read_trec`, :func:`~eval.runs.write_trec`, :func:`~eval.runs.exclude_self_hits`
- :func:`~eval.evaluation.evaluate_run`, :func:`~eval.evaluation.compare_runs`, :func:`~eval.evaluation.fuse_runs`

Imports are lazy so ``import eval`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RetrievalDataset": "eval.data",
    "Document": "eval.data",
    "load_dataset": "eval.data",
    "load_beir_folder": "eval.data",
    "BENCHMARKS": "eval.registry",
    "DatasetSpec": "eval.registry",
    "get_spec": "eval.registry",
    "read_trec": "eval.runs",
    "write_trec": "eval.runs",
    "exclude_self_hits": "eval.runs",
    "evaluate_run": "eval.evaluation",
    "compare_runs": "eval.evaluation",
    "fuse_runs": "eval.evaluation",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
