"""Benchmarks: several retrievers over a suite of datasets, with uncertainty, significance and reports.

For every dataset of the suite (``colmed.data.registry.SUITES``), each retriever's index and run are built
once and cached under ``<out>/cache/`` by a key of (retriever identity, dataset fingerprint, settings),
so adding a retriever to an existing benchmark directory only computes the new one. A dataset that
cannot be loaded (offline hub, a folder with queries and qrels but no corpus) is skipped with one
line and listed as skipped in the report.

The report is the MedEmbed-style table (retrievers x datasets, nDCG@10 and the average) with 95%
paired-bootstrap intervals, a second table with Recall@100 and MRR@10, and per-dataset significance
against a baseline (paired test from ranx, Holm-corrected across the compared retrievers), written as
markdown, CSV, JSON and a PNG plot, next to a ``manifest.json`` (config, versions, git sha, data hashes).

Retrievers are given as ``[name=]kind[:target]``: ``bm25``, ``dense:<model>``, ``colbert:<checkpoint>``
or ``index:<index dir>`` (a prebuilt index; used on the dataset whose corpus it was built from).

Modules: :mod:`~colmed.benchmark.spec` (retrievers, config), :mod:`~colmed.benchmark.datasets`,
:mod:`~colmed.benchmark.cache` (content-keyed indexes and runs), :mod:`~colmed.benchmark.runner`,
:mod:`~colmed.benchmark.result` (:class:`BenchmarkResult`), :mod:`~colmed.benchmark.report`.

Example:
    >>> import tempfile
    >>> from colmed.demo import sample_dataset_path
    >>> cfg = BenchmarkConfig(retrievers=["bm25"], datasets=[str(sample_dataset_path())], out=tempfile.mkdtemp())
    >>> result = run_benchmark(cfg, log=lambda line: None)
    >>> round(result.score("bm25", "sample_medical"), 4), result.dataset_names
    (0.8242, ['sample_medical'])
"""

from __future__ import annotations

from colmed.benchmark.result import (BaselineTest, BenchmarkResult, DatasetResult, RetrieverInfo,
                                     RetrieverOnDataset, SkippedDataset)
from colmed.benchmark.runner import run_benchmark
from colmed.benchmark.spec import BenchmarkConfig, RetrieverSpec

__all__ = ["BenchmarkConfig", "RetrieverSpec", "run_benchmark", "BenchmarkResult", "DatasetResult",
           "RetrieverOnDataset", "BaselineTest", "RetrieverInfo", "SkippedDataset"]
