"""Query filters, each counted by name in the manifest.

* ``length``: query word count outside ``[min_words, max_words]``;
* ``relevance``: the LLM's own relevance score below ``min_relevance`` (LLM-free queries carry none);
* ``evidence_not_in_note``: the evidence span the LLM quoted is not in the passage (a hallucination);
* ``duplicate``: same normalised text as an earlier query (:func:`dedup_queries`);
* ``round_trip``: the source passage is not in a retriever's top-k for the query (Promptagator);
  applied by the pipeline, which already retrieves for mining.

Example:
    >>> normalize_query("  What is the DOSE of Aspirin?? ")
    'what is the dose of aspirin'
    >>> QueryFilter(min_words=3).reason("aspirin dose", "Aspirin dose is 650 mg")
    'length'
"""

from __future__ import annotations

import re
import unicodedata


_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalize_query(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used for dedup and evidence matching."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split())


class QueryFilter:
    """The per-query filters that need only the query and its passage."""

    def __init__(self, min_words: int = 2, max_words: int = 64, min_relevance: float | None = None,
                 require_evidence_in_note: bool = True):
        self.min_words, self.max_words = min_words, max_words
        self.min_relevance = min_relevance
        self.require_evidence_in_note = require_evidence_in_note

    def reason(self, query: str, passage_text: str, evidence: str = "", relevance: float | None = None
               ) -> str | None:
        """The name of the first filter that rejects the query, or ``None`` to keep it."""
        n = len(query.split())
        if n < self.min_words or n > self.max_words:
            return "length"
        if self.min_relevance is not None and relevance is not None and relevance < self.min_relevance:
            return "relevance"
        if self.require_evidence_in_note and evidence:
            if normalize_query(evidence) not in normalize_query(passage_text):
                return "evidence_not_in_note"
        return None


def dedup_queries(queries: list) -> tuple[list, int]:
    """Keep one query per normalised text; returns (kept in input order, number removed).

    The survivor is the one with the smallest ``query_id``, not the first seen, so a sharded run
    merged later keeps exactly the queries a single run keeps.
    """
    winner: dict[str, str] = {}
    for q in queries:
        key = normalize_query(q.query)
        if key not in winner or q.query_id < winner[key]:
            winner[key] = q.query_id
    kept = [q for q in queries if winner[normalize_query(q.query)] == q.query_id]
    return kept, len(queries) - len(kept)
