"""The benchmarks colmed knows, each with its split and evaluation protocol.

Protocol lives here, per dataset, so no caller has to remember it: ArguAna's queries are themselves
corpus documents and BEIR's evaluation drops a query's own id from its results (``exclude_self_hits``).

Example:
    >>> get_spec("arguana").exclude_self_hits
    True
    >>> canonical_name("medicalqa")
    'medicalqa'
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetSpec:
    """How one benchmark is loaded and evaluated."""

    name: str
    hub_name: str
    split: str = "test"
    exclude_self_hits: bool = False
    #: Query tokens ColBERT reads on this dataset when it differs from the model's trained length: ColBERTv2's
    #: BEIR evaluation reads ArguAna's queries (whole arguments, ~240 tokens) up to 300 tokens instead of 32.
    colbert_query_maxlen: int | None = None
    description: str = ""
    aliases: tuple[str, ...] = field(default=())


BENCHMARKS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("nfcorpus", "BeIR/nfcorpus", "test", description="NutritionFacts questions over PubMed abstracts"),
    DatasetSpec("trec-covid", "BeIR/trec-covid", "test", description="COVID-19 topics over CORD-19",
                aliases=("trec_covid", "treccovid")),
    DatasetSpec("arguana", "BeIR/arguana", "test", exclude_self_hits=True, colbert_query_maxlen=300,
                description="counter-argument retrieval; queries are corpus documents"),
    DatasetSpec("medicalqa", "mteb/medical_qa", "test", description="MedQuAD consumer health QA (MTEB)",
                aliases=("medical_qa", "medicalqaretrieval")),
    DatasetSpec("publichealthqa", "xhluca/publichealth-qa", "test",
                description="public-health FAQ retrieval (MTEB, English)",
                aliases=("publichealth-qa", "publichealth_qa", "publichealthqaretrieval")),
    DatasetSpec("scifact", "BeIR/scifact", "test", description="scientific claim verification"),
]}

SUITES: dict[str, tuple[str, ...]] = {
    "medical": ("nfcorpus", "trec-covid", "arguana", "medicalqa", "publichealthqa"),
    "medical+scifact": ("nfcorpus", "trec-covid", "arguana", "medicalqa", "publichealthqa", "scifact"),
}

_ALIASES = {a: s.name for s in BENCHMARKS.values() for a in (s.name, *s.aliases)}
_ALIASES.update({s.hub_name.lower(): s.name for s in BENCHMARKS.values()})


def canonical_name(name: str) -> str:
    """Registered name for a folder or hub name; unknown names come back unchanged."""
    key = name.strip().lower().rstrip("/")
    return _ALIASES.get(key, _ALIASES.get(key.split("/")[-1], name))


def get_spec(name: str) -> DatasetSpec | None:
    """The spec of a registered benchmark (by name, alias or hub name), else ``None``."""
    return BENCHMARKS.get(canonical_name(name))
