"""The canonical triplet record shared by both trainer families.

One record = one query, its positive passage, and zero or more mined hard negatives, with scores and
provenance. Stored as JSON lines (``triplets.jsonl``) and as a ``datasets`` parquet file.

Example:
    >>> r = TripletRecord(query_id="q1", query="aspirin dose for fever", positive_id="n1#0",
    ...                   positive="Aspirin 650 mg every 4 hours ...", negative_ids=["n9#2"],
    ...                   negatives=["Insulin glargine ..."], note_id="n1", generator="inverse_cloze")
    >>> TripletRecord.from_dict(r.to_dict()) == r
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from colmed.core.errors import InputError
from colmed.core.io import read_jsonl, write_jsonl


@dataclass
class TripletRecord:
    """(query, positive, hard negatives) plus scores and provenance.

    ``negative_scores`` are the miner's scores, ``teacher_scores`` optional cross-encoder scores for
    ``[positive, *negatives]`` (distillation); ``split`` is ``train`` or ``dev`` (split by note).
    """

    query_id: str
    query: str
    positive_id: str
    positive: str
    negative_ids: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    positive_score: float | None = None
    negative_scores: list[float] = field(default_factory=list)
    teacher_scores: list[float] | None = None
    note_id: str = ""
    generator: str = ""
    miner: str = ""
    negative_ranks: list[int] = field(default_factory=list)
    query_type: str = ""
    evidence: str = ""
    relevance: float | None = None
    split: str = "train"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | Path | None = None, line: int | None = None) -> "TripletRecord":
        for key in ("query_id", "query", "positive_id", "positive"):
            if key not in d or d[key] is None:
                raise InputError("missing", path=path, line=line, field=key)
            if not isinstance(d[key], str):
                raise InputError("expected a string", path=path, line=line, field=key)
        if len(d.get("negative_ids") or []) != len(d.get("negatives") or []):
            raise InputError("negative_ids and negatives differ in length", path=path, line=line, field="negatives")
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def write_triplets(path: str | Path, records: Iterable[TripletRecord]) -> int:
    """Atomically write records as JSON lines; returns the count."""
    return write_jsonl(path, (r.to_dict() for r in records))


def read_triplets(path: str | Path) -> Iterator[TripletRecord]:
    """Read triplets from a JSONL file, or from a directory holding ``triplets.jsonl``.

    Errors name the file, line and field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "triplets.jsonl"
    for lineno, rec in read_jsonl(path):
        yield TripletRecord.from_dict(rec, path=path, line=lineno)
