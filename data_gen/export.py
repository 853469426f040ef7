"""Exporters from canonical :class:`~colmed.data.triplets.TripletRecord` s to what each trainer reads.

* :func:`to_sentence_transformers`: ``train.jsonl`` / ``dev.jsonl`` with ``anchor``, ``positive``,
  ``negative`` columns, one row per negative (sentence-transformers' ``triplet`` format, as
  ``mine_hard_negatives(output_format="triplet")`` writes it).
* :func:`to_colbert`: colbert-ai files: ``collection.tsv`` (``pid<TAB>text``, pid = 0-based line
  number), ``queries.tsv`` (``qid<TAB>text``, integer qids), ``triples.jsonl`` (train: one
  ``[qid, pos_pid, neg_pid, ...]`` list per line; with ``with_scores`` ``[qid, [pid, score], ...]``
  for distillation), ``dev_triples.jsonl`` and ``id_map.json`` (string ids -> integer ids).
* :func:`to_parquet`: a ``datasets`` parquet file of the records.

Every file is written atomically.

Example:
    >>> import tempfile, pathlib
    >>> from colmed.data.triplets import TripletRecord
    >>> recs = [TripletRecord("q1", "aspirin dose", "n1#0", "Aspirin 650 mg ...", ["n2#0"], ["Insulin ..."])]
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> to_colbert(recs, out)["triples"]
    1
    >>> (out / "triples.jsonl").read_text()
    '[0, 0, 1]\\n'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from colmed.core.io import atomic_write, write_json
from colmed.data.triplets import TripletRecord


def _one_line(text: str) -> str:
    # TSV cells cannot hold tabs or newlines; whitespace carries no meaning for the tokenizers.
    return " ".join(text.split())


def to_sentence_transformers(records: Iterable[TripletRecord], out_dir: str | Path) -> dict[str, int]:
    """Write ``train.jsonl`` and ``dev.jsonl`` (anchor/positive/negative rows); returns rows per file.

    A record without negatives cannot form a triplet and is counted as ``skipped_no_negatives``.
    """
    out_dir = Path(out_dir)
    by_split: dict[str, list[dict]] = {"train": [], "dev": []}
    skipped = 0
    for r in records:
        if not r.negatives:
            skipped += 1
            continue
        rows = by_split.setdefault(r.split or "train", [])
        rows += [{"anchor": r.query, "positive": r.positive, "negative": n} for n in r.negatives]
    counts = {}
    for split, rows in by_split.items():
        with atomic_write(out_dir / f"{split}.jsonl") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    counts["skipped_no_negatives"] = skipped
    return counts


def to_colbert(records: Iterable[TripletRecord], out_dir: str | Path, with_scores: str | None = None
               ) -> dict[str, int]:
    """Write colbert-ai training files; returns counts (``triples`` = train lines).

    ``with_scores``: ``"teacher"`` or ``"miner"`` writes ``[qid, [pid, score], ...]`` (colbert-ai's
    distillation format); records lacking those scores are skipped.
    """
    out_dir = Path(out_dir)
    pids: dict[str, int] = {}
    texts: list[str] = []
    qids: dict[str, int] = {}
    queries: list[str] = []
    lines: dict[str, list[str]] = {"train": [], "dev": []}
    skipped = 0

    def pid(doc_id: str, text: str) -> int:
        if doc_id not in pids:
            pids[doc_id] = len(texts)
            texts.append(_one_line(text))
        return pids[doc_id]

    for r in records:
        if not r.negatives:
            skipped += 1
            continue
        if r.query_id not in qids:
            qids[r.query_id] = len(queries)
            queries.append(_one_line(r.query))
        ids = [pid(r.positive_id, r.positive)] + [pid(d, t) for d, t in zip(r.negative_ids, r.negatives)]
        if with_scores:
            scores = (r.teacher_scores if with_scores == "teacher"
                      else ([r.positive_score] + list(r.negative_scores) if r.positive_score is not None else None))
            if not scores or len(scores) != len(ids):
                skipped += 1
                continue
            row: list = [qids[r.query_id]] + [[i, float(s)] for i, s in zip(ids, scores)]
        else:
            row = [qids[r.query_id]] + ids
        lines.setdefault(r.split or "train", []).append(json.dumps(row))
    with atomic_write(out_dir / "collection.tsv") as f:
        for i, text in enumerate(texts):
            f.write(f"{i}\t{text}\n")
    with atomic_write(out_dir / "queries.tsv") as f:
        for i, text in enumerate(queries):
            f.write(f"{i}\t{text}\n")
    for split, name in (("train", "triples.jsonl"), ("dev", "dev_triples.jsonl")):
        with atomic_write(out_dir / name) as f:
            f.writelines(line + "\n" for line in lines.get(split, []))
    write_json(out_dir / "id_map.json", {"pids": pids, "qids": qids})
    return {"triples": len(lines.get("train", [])), "dev_triples": len(lines.get("dev", [])),
            "collection": len(texts), "queries": len(queries), "skipped": skipped}


def to_parquet(records: Iterable[TripletRecord], path: str | Path) -> int:
    """Write the records as a ``datasets`` parquet file (atomically); returns the row count."""
    import datasets

    path = Path(path)
    rows = [r.to_dict() for r in records]
    features = datasets.Features({
        "query_id": datasets.Value("string"), "query": datasets.Value("string"),
        "positive_id": datasets.Value("string"), "positive": datasets.Value("string"),
        "negative_ids": datasets.Sequence(datasets.Value("string")),
        "negatives": datasets.Sequence(datasets.Value("string")),
        "positive_score": datasets.Value("float64"),
        "negative_scores": datasets.Sequence(datasets.Value("float64")),
        "teacher_scores": datasets.Sequence(datasets.Value("float64")),
        "note_id": datasets.Value("string"), "generator": datasets.Value("string"),
        "miner": datasets.Value("string"), "negative_ranks": datasets.Sequence(datasets.Value("int64")),
        "query_type": datasets.Value("string"), "evidence": datasets.Value("string"),
        "relevance": datasets.Value("float64"), "split": datasets.Value("string"),
    })
    datasets.disable_progress_bars()  # callers show their own progress
    dataset = (datasets.Dataset.from_list(rows, features=features) if rows
               else datasets.Dataset.from_dict({k: [] for k in features}, features=features))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        dataset.to_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)
