"""Render comparisons as a terminal table, markdown and a PNG bar plot.

Significance markers follow ranx: a superscript letter after a score names each run it beats
significantly (paired test at ``max_p``). :func:`markdown_table` is the one markdown table writer of
colmed's reports (compare, demo, benchmark, published-figure checks).

Example:
    >>> for line in markdown_table(["run", "nDCG@10"], [["bm25", "0.3213"]]):
    ...     print(line)
    | run | nDCG@10 |
    |---|---|
    | bm25 | 0.3213 |
"""

from __future__ import annotations

import string
from pathlib import Path

from typing import Iterable, Sequence

from colmed.core.io import atomic_write
from colmed.eval.evaluation import Comparison
from colmed.eval.protocol import SIGNIFICANCE_TESTS

_SUP = str.maketrans(string.ascii_lowercase, "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖqʳˢᵗᵘᵛʷˣʸᶻ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table as lines: header, separator, one line per row (cells rendered with ``str``)."""
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def significance_test_name(stat_test: str) -> str:
    """The full name of a significance test key (``student``, ``fisher``)."""
    return SIGNIFICANCE_TESTS.get(stat_test, stat_test)


def _letters(names: list[str]) -> dict[str, str]:
    return {n: string.ascii_lowercase[i % 26] for i, n in enumerate(names)}


def _ci_metric(c: Comparison) -> str | None:
    """The metric whose interval is shown: nDCG@10 when reported, else the first metric."""
    if not c.confidence_intervals:
        return None
    return "ndcg@10" if "ndcg@10" in c.metrics else c.metrics[0]


def comparison_header(c: Comparison) -> list[str]:
    ci = _ci_metric(c)
    return ["", "run", *c.metrics] + ([f"{round(c.confidence * 100)}% CI {ci}"] if ci else [])


def comparison_rows(c: Comparison) -> list[list[str]]:
    """Rows ``[letter, run, score+markers ..., CI]`` shared by the markdown and terminal renderers."""
    letters = _letters(c.names)
    ci = _ci_metric(c)
    rows = []
    for n in c.names:
        cells = [letters[n], n]
        for m in c.metrics:
            mark = "".join(letters[b] for b in c.significant[n][m]).translate(_SUP)
            cells.append(f"{c.scores[n][m]:.4f}{mark}")
        if ci:
            low, high = c.confidence_intervals[n][ci]
            cells.append(f"[{low:.4f}, {high:.4f}]")
        rows.append(cells)
    return rows


def to_markdown(c: Comparison, title: str | None = None) -> str:
    lines = [f"## {title or c.dataset or 'comparison'}", "",
             *markdown_table(comparison_header(c), comparison_rows(c))]
    lines += ["", f"Superscripts: the run is significantly better than the lettered run "
                  f"({significance_test_name(c.stat_test)}, p < {c.max_p}, uncorrected pairwise)."]
    if c.confidence_intervals:
        lines += [f"CI: {round(c.confidence * 100)}% percentile bootstrap over queries (colmed.eval.uncertainty)."]
    lines += [""]
    cov = [f"{n}: {v['queries_with_results']}/{v['judged_queries']} judged queries with results"
           for n, v in c.coverage.items()]
    if cov:
        lines += ["Coverage: " + "; ".join(cov) + ".", ""]
    if c.protocol:
        lines += ["Protocol:", ""]
        for k, v in c.protocol.items():
            if isinstance(v, dict):
                lines += [f"- {k}:"] + [f"  - {kk}: {vv}" for kk, vv in v.items()]
            else:
                lines.append(f"- {k}: {v}")
        lines.append("")
    return "\n".join(lines)


def print_table(c: Comparison, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or c.dataset or "comparison")
    for h in comparison_header(c):
        table.add_column(h, justify="right" if h not in ("", "run") else "left")
    for r in comparison_rows(c):
        table.add_row(*r)
    console = Console()
    console.print(table)
    console.print(f"superscript = significantly better than that run ({significance_test_name(c.stat_test)}, "
                  f"p < {c.max_p})")


def write_comparison(c: Comparison, out: str | Path, heading: str, title: str) -> Path:
    """``report.md`` (``# heading`` + the table), ``comparison.json`` and ``comparison.png`` under ``out``."""
    from colmed.core.io import write_json

    out = Path(out)
    with atomic_write(out / "report.md") as f:
        f.write(f"# {heading}\n\n" + to_markdown(c, title))
    write_json(out / "comparison.json", c.to_dict())
    plot_bars(c.scores, c.metrics, out / "comparison.png", title=title)
    return out


def save_png(fig, path: str | Path, dpi: int = 120) -> None:
    """Lay out, write atomically as PNG, and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)


def plot_bars(scores: dict[str, dict[str, float]], metrics: list[str], path: str | Path, title: str = "",
              errors: dict[str, dict[str, tuple[float, float]]] | None = None) -> None:
    """Grouped bar plot: one group per metric (or dataset), one bar per run; written atomically as PNG.

    ``errors`` (run -> group -> (low, high)) draws confidence intervals as error bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(scores)
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(1, len(names)) / 2), 4))
    for i, n in enumerate(names):
        vals = [scores[n].get(m, float("nan")) for m in metrics]
        yerr = None
        if errors and n in errors:
            lows = [v - errors[n].get(m, (v, v))[0] for v, m in zip(vals, metrics)]
            highs = [errors[n].get(m, (v, v))[1] - v for v, m in zip(vals, metrics)]
            yerr = np.array([lows, highs])
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=n, yerr=yerr, capsize=2)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, min(1.12, max(v for s in scores.values() for v in s.values()) * 1.15 + 0.02))
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_png(fig, path, dpi=120)
