"""Which datasets a benchmark runs, how a suite member is found (local folder, else the hub), and the
search-time options a dataset's protocol sets.

Example:
    >>> dataset_search_options("colbert", "arguana")
    {'query_maxlen': 300}
    >>> dataset_search_options("dense", "arguana")
    {}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from colmed.core.errors import ColmedError, InputError


def dataset_names(config) -> list[str]:
    """The datasets of a :class:`~colmed.benchmark.spec.BenchmarkConfig`: its ``datasets``, else its suite's."""
    from colmed.data.registry import SUITES

    if config.datasets:
        return list(config.datasets)
    if config.suite not in SUITES:
        raise InputError(f"unknown suite {config.suite!r}; choose from {', '.join(SUITES)}", field="suite")
    return list(SUITES[config.suite])


def load_benchmark_dataset(name: str, data_dir: str | None = None, split: str = "test"):
    """Load a suite member: ``<data_dir>/<name or alias>`` when present, else the hub (registry name).

    Raises :class:`InputError` with one line naming every place tried when the dataset cannot be used.
    """
    from colmed.data.datasets import load_beir_folder, load_dataset
    from colmed.data.registry import get_spec

    spec = get_spec(name)
    if spec is None or Path(name).exists():  # a folder given directly
        return load_dataset(name, split=split)
    reasons = []
    if data_dir:
        for folder in (spec.name, *spec.aliases):
            p = Path(data_dir) / folder
            if p.is_dir():
                try:
                    return load_beir_folder(p, split=spec.split if split == "test" else split, name=spec.name)
                except InputError as e:
                    reasons.append(str(e))
                break
        else:
            reasons.append(f"no folder {Path(data_dir) / spec.name}")
    try:
        return load_dataset(spec.name, split=split)
    except ColmedError as e:
        reasons.append(str(e))
    raise InputError("; ".join(reasons))


def dataset_search_options(family: str, dataset_name: str) -> dict[str, Any]:
    """Search-time options the dataset's protocol sets for one retriever family (``{}`` when none)."""
    from colmed.data.registry import get_spec

    ds_spec = get_spec(dataset_name)
    if family == "colbert" and ds_spec is not None and ds_spec.colbert_query_maxlen:
        return {"query_maxlen": ds_spec.colbert_query_maxlen}
    return {}
