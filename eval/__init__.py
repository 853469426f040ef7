"""colmed.eval: benchmark datasets, runs and ranx-based evaluation.

Public API (small on purpose, like ranx):

- :class:`~colmed.data.datasets.RetrievalDataset`, :func:`~colmed.data.datasets.load_dataset`
- :data:`~colmed.data.registry.BENCHMARKS`, :func:`~colmed.data.registry.get_spec`
- :func:`~colmed.data.runs.read_trec`, :func:`~colmed.data.runs.write_trec`, :func:`~colmed.data.runs.exclude_self_hits`
- :func:`~colmed.eval.evaluation.evaluate_run`, :func:`~colmed.eval.evaluation.compare_runs`, :func:`~colmed.eval.evaluation.fuse_runs`
- :func:`~colmed.eval.compare.compare_trec_runs` (run files + protocol sidecars, as ``colmed compare``)

Imports are lazy so ``import colmed.eval`` stays cheap.
"""

from __future__ import annotations

if __name__ != "colmed.eval":  # the folder installs as colmed.eval; a bare `import eval` would shadow other packages
    raise ImportError("import colmed.eval, not eval: colmed installs one top-level package")



import importlib

_EXPORTS = {
    "RetrievalDataset": "colmed.data.datasets",
    "Document": "colmed.data.datasets",
    "load_dataset": "colmed.data.datasets",
    "load_beir_folder": "colmed.data.datasets",
    "BENCHMARKS": "colmed.data.registry",
    "DatasetSpec": "colmed.data.registry",
    "get_spec": "colmed.data.registry",
    "read_trec": "colmed.data.runs",
    "write_trec": "colmed.data.runs",
    "exclude_self_hits": "colmed.data.runs",
    "evaluate_run": "colmed.eval.evaluation",
    "compare_runs": "colmed.eval.evaluation",
    "fuse_runs": "colmed.eval.evaluation",
    "compare_trec_runs": "colmed.eval.compare",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
