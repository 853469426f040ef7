"""Compare TREC run files on one dataset: read runs and their protocol sidecars, check that they were
produced under the same protocol, evaluate and test them (``colmed compare`` is a thin layer over this).

Example:
    >>> import tempfile, pathlib
    >>> from importlib import resources
    >>> from colmed.data.datasets import load_dataset
    >>> from colmed.data.runs import write_trec
    >>> sample = load_dataset(str(resources.files("colmed") / "data" / "sample_medical"))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_trec(folder / "oracle.trec", {q: {d: 1.0 for d in rels} for q, rels in sample.qrels.items()})
    >>> comp = compare_trec_runs(sample, [folder / "oracle.trec"])
    >>> comp.names, comp.scores["oracle"]["recall@100"], comp.protocol["self_hits"]
    (['oracle'], 1.0, 'kept')
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from colmed.core.errors import InputError
from colmed.eval.evaluation import DEFAULT_METRICS, Comparison, compare_runs, resolve_self_hits

PAIRWISE_CORRECTION = "none (pairwise markers; use colmed benchmark for Holm-corrected tests against a baseline)"


def name_runs(runs: Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, str]:
    """``{name: path}`` from a mapping, or from paths and ``NAME=PATH`` items (a bare path is named by its
    file name without ``.trec``/``.txt``); two runs with one name are refused."""
    if isinstance(runs, Mapping):
        return {str(n): str(p) for n, p in runs.items()}
    named: dict[str, str] = {}
    for item in runs:
        name, sep, path = str(item).partition("=")
        if not sep:
            name, path = Path(str(item)).name.removesuffix(".trec").removesuffix(".txt"), str(item)
        if name in named:
            raise InputError(f"two runs are named {name!r}; name them with NAME=PATH", path=path)
        named[name] = path
    return named


def compare_trec_runs(dataset, runs: Mapping[str, str | Path] | Sequence[str | Path], *, split: str = "test",
                      metrics: Sequence[str] | None = None, fuse: str | None = None, stat_test: str = "student",
                      max_p: float = 0.05, exclude_self_hits: bool | None = None,
                      allow_prompt_ablation: bool = False) -> Comparison:
    """Evaluate TREC run files against ``dataset``'s qrels and test every pair (:func:`compare_runs`).

    ``dataset`` is a :class:`~colmed.data.datasets.RetrievalDataset`, a BEIR folder or a hub name (its
    ``split`` is read; no corpus is needed). Runs with sidecars must share split, queries, qrels and ``k``,
    and runs of one model must share prompts unless ``allow_prompt_ablation``
    (:mod:`colmed.eval.protocol`). ``exclude_self_hits=None`` follows the dataset registry (ArguAna).
    The returned comparison carries the protocol record, with each run's prompts.
    """
    from colmed.data.datasets import load_dataset
    from colmed.data.runs import read_trec
    from colmed.eval.protocol import check_comparable, check_prompts, protocol_record, read_sidecar

    named = name_runs(runs)
    if not named:
        raise InputError("no runs to compare")
    metrics = list(metrics or DEFAULT_METRICS)
    check_metrics(metrics)
    if fuse is not None:
        check_fusion(fuse, len(named))
    sidecars = {p: read_sidecar(p) for p in named.values()}
    check_comparable(sidecars)
    check_prompts(sidecars, allow_prompt_ablation=allow_prompt_ablation)
    ds = dataset if hasattr(dataset, "qrels") else load_dataset(str(dataset), split=split, require_corpus=False)
    check_judged_by(sidecars, ds)
    exclude = resolve_self_hits(ds, exclude_self_hits)
    loaded = {n: read_trec(p) for n, p in named.items()}
    comp = compare_runs(ds, loaded, metrics, stat_test=stat_test, max_p=max_p, exclude_self_hits=exclude,
                        fuse=fuse, dataset_name=ds.name)
    ks = {sc.get("k") for sc in sidecars.values() if sc and sc.get("k") is not None}
    comp.protocol = protocol_record(ds, k=ks.pop() if len(ks) == 1 else None, exclude_self_hits=exclude,
                                    metrics=metrics, stat_test=stat_test, correction=PAIRWISE_CORRECTION)
    comp.protocol["prompts"] = {n: {"query": (sidecars[p] or {}).get("index", {}).get("query_prompt"),
                                    "document": (sidecars[p] or {}).get("index", {}).get("document_prompt")}
                                for n, p in named.items() if sidecars[p]}
    comp.protocol["prompt_ablation_allowed"] = allow_prompt_ablation
    return comp


def check_metrics(metrics: Sequence[str]) -> None:
    """Refuse a metric ranx does not know before any run is read (``ndcg@10``, ``recall@100``, ``mrr@10`` ...).

    Example:
        >>> check_metrics(["ndcg@10", "ndgc@10"])
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: field '--metric': unknown metric 'ndgc@10' (ranx: Metric ndgc not supported...)
    """
    from ranx import Qrels, Run, evaluate

    qrels, run = Qrels({"q": {"d": 1}}), Run({"q": {"d": 1.0}})
    for metric in metrics:
        try:
            evaluate(qrels, run, metric)
        except Exception as e:  # ranx raises ValueError, KeyError or IndexError for a malformed name
            raise InputError(f"unknown metric {metric!r} (ranx: {str(e).split('.')[0]}...)", field="--metric") from None


def check_fusion(method: str, num_runs: int) -> None:
    """Refuse an unknown fusion method, or fusion of fewer than two runs.

    Example:
        >>> check_fusion("rfr", 2)
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: field '--fuse': unknown fusion method 'rfr'; ranx has ...
    """
    import inspect
    import re

    from ranx import fusion

    try:
        fusion.fusion_switch(method)
    except ValueError:
        source = inspect.getsource(fusion.fusion_switch)
        known = sorted(set(re.findall(r'"([a-z_]+)"', source)))
        raise InputError(f"unknown fusion method {method!r}; ranx has {', '.join(known)}", field="--fuse") from None
    if num_runs < 2:
        raise InputError(f"fusing needs at least two runs, got {num_runs}", field="--fuse")


def check_judged_by(sidecars: Mapping[Path | str, dict | None], ds) -> None:
    """Refuse a run whose sidecar says it was made for other qrels (another dataset or split) than ``ds``'s."""
    for path, sidecar in sidecars.items():
        recorded = (sidecar or {}).get("qrels_hash")
        if recorded and getattr(ds, "qrels_hash", None) and recorded != ds.qrels_hash:
            raise InputError(f"was made for other qrels ({sidecar.get('dataset')}, split {sidecar.get('split')}) than "
                             f"{ds.name}'s {getattr(ds, 'split', '')} qrels; compare runs on the dataset they were made "
                             "for", path=path, field="qrels_hash")
