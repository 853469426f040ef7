"""What every query generator returns.

Example:
    >>> q = GeneratedQuery("n1#0:ict0", "fever after aspirin?", "n1#0", "n1#0", "n1", "Aspirin ...",
    ...                    generator="inverse_cloze")
    >>> q.source_passage_id
    'n1#0'
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from colmed.data_gen.notes import Passage, stable_fraction


@dataclass
class GeneratedQuery:
    """A query and its positive, before mining.

    ``positive_id`` names the positive text; it equals ``source_passage_id`` unless the generator
    altered the passage (inverse cloze removes the query sentence, cropping takes a span), in which
    case it is ``<passage_id>:<suffix>`` so an id never names two different texts.
    """

    query_id: str
    query: str
    positive_id: str
    source_passage_id: str
    note_id: str
    positive: str
    generator: str = ""
    query_type: str = ""
    evidence: str = ""
    relevance: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratedQuery":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


@dataclass
class GenerationResult:
    """Queries, rejected outputs (note id, raw text, why) and counters for the manifest."""

    queries: list[GeneratedQuery] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class QueryGenerator(Protocol):
    name: str

    def generate(self, passages: list[Passage]) -> GenerationResult:
        """Queries for a batch of passages; must never raise for one bad passage or output."""
        ...


def passage_rng(seed: int, passage_id: str) -> random.Random:
    """A per-passage RNG: the same queries whatever the batching, sharding or resume point."""
    return random.Random(int(stable_fraction(passage_id, f"gen-{seed}") * 2 ** 53))
