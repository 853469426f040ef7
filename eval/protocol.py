"""The evaluation protocol a run was produced under, and the checks that runs share it.

Runs written by ``colmed search`` (and ``colmed benchmark``) carry a sidecar ``<run>.json``. Runs may
differ in retriever, model and prompts (that is what is being compared) but not in what they were
asked or how they are judged: the same queries (hash), split, qrels (hash) and cutoff ``k``. A mismatch
is refused with the field that differs.

Prompts are part of a model's protocol: two runs of the *same* model made with different query or
document prompts are a prompt ablation, not a model comparison (the MedEmbed/pyserini bge-base gap,
castorini/pyserini#1888, is exactly such a slip), so they are refused unless the caller opts in.

Every report also records a :func:`protocol_record`: dataset identity (content hash or hub revision),
split, qrels hash, queries hash, self-hit policy, ``k``, metric definitions, the significance test and
its multiple-comparison correction.

Example:
    >>> check_comparable({"a.trec": {"split": "test", "k": 100}, "b.trec": {"split": "dev", "k": 100}})
    Traceback (most recent call last):
    ...
    colmed.core.errors.ProtocolMismatchError: runs were produced under different protocols: field 'split' is 'test' in a.trec but 'dev' in b.trec
    >>> same_model = {"model": "BAAI/bge-base-en-v1.5", "document_prompt": ""}
    >>> check_prompts({"a": {"index": {**same_model, "query_prompt": "Represent ...: "}},
    ...                "b": {"index": {**same_model, "query_prompt": ""}}})
    Traceback (most recent call last):
    ...
    colmed.core.errors.ProtocolMismatchError: runs of the same model 'BAAI/bge-base-en-v1.5' use different prompts: field 'index.query_prompt' is 'Represent ...: ' in a but '' in b (pass --allow-prompt-ablation to compare a prompt ablation)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from colmed.core.errors import InputError, ProtocolMismatchError
from colmed.data.datasets import queries_hash  # noqa: F401  (re-exported: sidecars name it)

SHARED_FIELDS = ("split", "queries_hash", "qrels_hash", "k")
PROMPT_FIELDS = ("query_prompt", "document_prompt")

# What each reported metric means, recorded verbatim in every report (ranx implementations).
METRIC_DEFINITIONS = {
    "ndcg@10": "nDCG@10 with graded gains (rel, linear; ranx/trec_eval ndcg_cut), judged queries only, "
               "mean over queries",
    "recall@100": "fraction of a query's relevant documents (rel > 0) in its top 100, mean over queries",
    "mrr@10": "reciprocal rank of the first relevant document within the top 10 (0 if none), mean over queries",
    "map@100": "average precision over the top 100, mean over queries",
}
# The one name table of the paired tests (ranx ``compare``): protocol records and every report use it.
SIGNIFICANCE_TESTS = {"student": "two-sided paired Student's t-test over queries (ranx)",
                      "fisher": "two-sided paired Fisher's randomization test over queries (ranx)"}


def read_sidecar(run_path: str | Path) -> dict | None:
    """The protocol sidecar of a run file, or ``None`` for a run made elsewhere."""
    p = Path(str(run_path) + ".json")
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON ({e.msg})", path=p, line=e.lineno) from None


def check_comparable(sidecars: dict[str, dict | None], fields=SHARED_FIELDS) -> None:
    """Raise :class:`ProtocolMismatchError` naming the first field on which two runs differ."""
    known = {name: sc for name, sc in sidecars.items() if sc}
    for f in fields:
        seen = [(name, sc[f]) for name, sc in known.items() if sc.get(f) is not None]
        for name, value in seen[1:]:
            if value != seen[0][1]:
                raise ProtocolMismatchError(
                    f"runs were produced under different protocols: field {f!r} is {seen[0][1]!r} in "
                    f"{seen[0][0]} but {value!r} in {name}")


def check_prompts(sidecars: dict[str, dict | None], allow_prompt_ablation: bool = False) -> None:
    """Refuse runs of the same model (``index.model``) made with different query/document prompts.

    Different models may use different prompts (each as its authors intend); the same model under two
    prompts is a prompt ablation and needs ``allow_prompt_ablation=True``.
    """
    if allow_prompt_ablation:
        return
    by_model: dict[str, list[tuple[str, dict]]] = {}
    for name, sc in sidecars.items():
        index = (sc or {}).get("index") or {}
        if index.get("model"):
            by_model.setdefault(str(index["model"]), []).append((name, index))
    for model, runs in by_model.items():
        first_name, first = runs[0]
        for name, index in runs[1:]:
            for f in PROMPT_FIELDS:
                a, b = first.get(f) or "", index.get(f) or ""
                if a != b:
                    raise ProtocolMismatchError(
                        f"runs of the same model {model!r} use different prompts: field 'index.{f}' is {a!r} in "
                        f"{first_name} but {b!r} in {name} (pass --allow-prompt-ablation to compare a prompt "
                        f"ablation)")


def protocol_record(dataset, *, k: int | None, exclude_self_hits: bool, metrics=("ndcg@10",),
                    stat_test: str | None = None, correction: str | None = None,
                    queries: Mapping[str, str] | None = None) -> dict:
    """The locked protocol of one evaluation, as recorded in reports and manifests."""
    return {
        "dataset": dataset.name,
        "dataset_source": dataset.source,
        "dataset_fingerprint": dataset.fingerprint,
        "split": dataset.split,
        "qrels_hash": dataset.qrels_hash,
        "queries_hash": queries_hash(queries if queries is not None else dataset.queries),
        "judged_queries": sum(1 for r in dataset.qrels.values() if r),
        "self_hits": "excluded (a query's own id is dropped from its results)" if exclude_self_hits else "kept",
        "k": k,
        "metrics": {m: METRIC_DEFINITIONS.get(m, "ranx metric " + m) for m in metrics},
        "significance_test": SIGNIFICANCE_TESTS.get(stat_test, stat_test) if stat_test else None,
        "correction": correction,
    }
