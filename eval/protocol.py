"""The evaluation protocol a run was produced under, and the check that runs share it.

Runs written by ``colmed search`` carry a sidecar ``<run>.json``. Runs may differ in retriever,
model and prompts (that is what is being compared) but not in what they were asked: the same
queries (hash), split and cutoff ``k``. A mismatch is refused with the field that differs.

Example:
    >>> check_comparable({"a.trec": {"split": "test", "k": 100}, "b.trec": {"split": "dev", "k": 100}})
    Traceback (most recent call last):
    ...
    colmed.errors.ProtocolMismatchError: runs were produced under different protocols: field 'split' is 'test' in a.trec but 'dev' in b.trec
"""

from __future__ import annotations

import json
from pathlib import Path

from colmed.errors import InputError, ProtocolMismatchError

SHARED_FIELDS = ("split", "queries_hash", "qrels_hash", "k")


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
