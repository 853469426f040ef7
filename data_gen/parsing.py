"""Parse and validate an LLM's JSON reply into query items.

Tolerates what small models do around the JSON (code fences, leading prose, trailing text) but not
what breaks the schema: a reply without a parsable ``{"queries": [...]}`` object, or whose items all
fail validation, raises :class:`LLMOutputError` so the caller can retry and finally reject it.
Invalid items next to valid ones are dropped and counted; complete items of a reply cut off by the
token budget are kept.

Example:
    >>> items, bad = parse_queries('```json\\n{"queries": [{"type": "keyword", "query": "metformin dose",'
    ...                            ' "evidence": "Metformin 500 mg", "relevance": "5"}]}\\n```', ["keyword"])
    >>> items[0]["query"], items[0]["relevance"], bad
    ('metformin dose', 5.0, 0)
"""

from __future__ import annotations

import json
from typing import Any


class LLMOutputError(ValueError):
    """The reply does not contain a valid query list; ``str`` says why."""


def _json_objects(text: str):
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _ = decoder.raw_decode(text, pos)
            yield obj
        except json.JSONDecodeError:
            pass
        pos = text.find("{", pos + 1)


def _salvage_items(text: str) -> list[Any]:
    """Complete items of a ``"queries": [`` list whose end was cut off (the token budget ran out)."""
    start = text.find('"queries"')
    start = text.find("[", start) if start != -1 else -1
    if start == -1:
        return []
    decoder, items, pos = json.JSONDecoder(), [], start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items
        items.append(obj)


def validate_item(item: Any, allowed_types: list[str], require_evidence: bool = True) -> dict[str, Any]:
    """One validated query item, or :class:`LLMOutputError` naming the bad field."""
    if not isinstance(item, dict):
        raise LLMOutputError("item is not an object")
    query = item.get("query")
    if not isinstance(query, str) or not query.strip():
        raise LLMOutputError("field 'query': missing or empty")
    qtype = str(item.get("type", "")).strip().lower()
    if qtype not in allowed_types:
        raise LLMOutputError(f"field 'type': {qtype!r} is not one of {allowed_types}")
    evidence = item.get("evidence")
    if not isinstance(evidence, str) or not evidence.strip():
        if require_evidence:
            raise LLMOutputError("field 'evidence': missing or empty")
        evidence = ""
    try:
        relevance = float(item.get("relevance"))
    except (TypeError, ValueError):
        raise LLMOutputError("field 'relevance': not a number") from None
    if not 1 <= relevance <= 5:
        raise LLMOutputError(f"field 'relevance': {relevance} outside 1-5")
    return {"type": qtype, "query": " ".join(query.split()), "evidence": " ".join(evidence.split()),
            "relevance": relevance}


def _validate_all(raws: list, allowed_types: list[str], require_evidence: bool = True
                  ) -> tuple[list[dict[str, Any]], int, str | None]:
    """Valid items, the count of invalid ones, and the last validation error."""
    items, bad, error = [], 0, None
    for raw in raws:
        try:
            items.append(validate_item(raw, allowed_types, require_evidence))
        except LLMOutputError as e:
            bad += 1
            error = str(e)
    return items, bad, error


def parse_queries(text: str | None, allowed_types: list[str], require_evidence: bool = True
                  ) -> tuple[list[dict[str, Any]], int]:
    """``(valid items, number of invalid items)`` from a reply; raises if no valid item is found.

    ``require_evidence=False`` accepts items without an evidence span (templates that do not ask for one).
    """
    if not text or not text.strip():
        raise LLMOutputError("empty reply")
    last_error = "no JSON object with a 'queries' list"
    for obj in _json_objects(text):
        if not isinstance(obj, dict) or not isinstance(obj.get("queries"), list):
            continue
        items, bad, error = _validate_all(obj["queries"], allowed_types, require_evidence)
        if items:
            return items, bad
        last_error = f"no valid item ({error or last_error})"
    salvaged = _salvage_items(text)
    if salvaged:
        items, bad, error = _validate_all(salvaged, allowed_types, require_evidence)
        if items:
            return items, bad
        last_error = error or last_error
    raise LLMOutputError(last_error)
