"""Turn colmed triplets into what sentence-transformers trains on, plus a dev retrieval set.

Train records become a :class:`datasets.Dataset` with columns ``anchor``, ``positive`` and
``negative_1..n`` (the column order is what the ranking losses read: anchor, positive, negatives). Dev
records become a small :class:`~colmed.data.datasets.RetrievalDataset`: the dev queries, a corpus made of every dev
positive and negative, and qrels marking each query's positive(s) relevant.

Example:
    >>> from colmed.data.triplets import TripletRecord
    >>> recs = [TripletRecord("q1", "aspirin dose", "p1", "Aspirin 650 mg", ["p2"], ["Insulin 10 units"]),
    ...         TripletRecord("q2", "insulin dose", "p2", "Insulin 10 units", ["p1"], ["Aspirin 650 mg"],
    ...                       split="dev")]
    >>> data = TripletTrainingData.from_records(recs, num_negatives=1)
    >>> data.train.column_names
    ['anchor', 'positive', 'negative_1']
    >>> sorted(data.dev.corpus), data.dev.qrels
    (['p1', 'p2'], {'q2': {'p2': 1}})
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from colmed.core.errors import InputError
from colmed.core.io import sha256_file
from colmed.data.triplets import TripletRecord, read_triplets
from colmed.data.datasets import Document, RetrievalDataset

logger = logging.getLogger(__name__)


@dataclass
class TripletTrainingData:
    """Training rows and dev retrieval set built from triplet records.

    ``stats`` counts what was kept and skipped and why, so a run's manifest says exactly what it saw.
    """

    train: "datasets.Dataset"  # noqa: F821 - imported lazily
    dev: RetrievalDataset | None
    stats: dict[str, int] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: str | Path, num_negatives: int = 1, max_train_samples: int | None = None,
                  seed: int = 42) -> "TripletTrainingData":
        """Read ``triplets.jsonl`` (or a directory holding it) and build the training data."""
        path = Path(path)
        file = path / "triplets.jsonl" if path.is_dir() else path
        if not file.is_file():
            raise InputError("triplets file not found", path=file)
        data = cls.from_records(read_triplets(file), num_negatives=num_negatives,
                                max_train_samples=max_train_samples, seed=seed, source_name=str(file))
        data.source = {"path": str(file.resolve()), "sha256": sha256_file(file)}
        manifest = file.parent / "manifest.json"
        if manifest.is_file():
            data.source["data_manifest"] = str(manifest.resolve())
            data.source["data_manifest_sha256"] = sha256_file(manifest)
        return data

    @classmethod
    def from_records(cls, records: Iterable[TripletRecord], num_negatives: int = 1,
                     max_train_samples: int | None = None, seed: int = 42,
                     source_name: str = "<records>") -> "TripletTrainingData":
        import datasets  # deferred: heavy

        stats: Counter[str] = Counter()
        columns: dict[str, list[str]] = {"anchor": [], "positive": [],
                                         **{f"negative_{i}": [] for i in range(1, num_negatives + 1)}}
        dev_queries: dict[str, str] = {}
        dev_corpus: dict[str, Document] = {}
        dev_qrels: dict[str, dict[str, int]] = {}
        for rec in records:
            stats["records"] += 1
            if not rec.query.strip() or not rec.positive.strip():
                stats["skipped_empty_query_or_positive"] += 1
                continue
            # A "negative" that is the positive itself would teach the model to push the answer away.
            negatives = [(i, t) for i, t in zip(rec.negative_ids, rec.negatives)
                         if i != rec.positive_id and t.strip() and t != rec.positive]
            stats["dropped_negatives_equal_to_positive"] += len(rec.negatives) - len(negatives)
            if rec.split == "dev":
                stats["dev_records"] += 1
                dev_queries[rec.query_id] = rec.query
                dev_qrels.setdefault(rec.query_id, {})[rec.positive_id] = 1
                dev_corpus[rec.positive_id] = Document(rec.positive_id, rec.positive)
                for neg_id, neg_text in negatives:
                    dev_corpus.setdefault(neg_id, Document(neg_id, neg_text))
                continue
            if rec.split != "train":
                stats[f"skipped_split_{rec.split or 'empty'}"] += 1
                continue
            if len(negatives) < num_negatives:
                stats["skipped_too_few_negatives"] += 1
                continue
            columns["anchor"].append(rec.query)
            columns["positive"].append(rec.positive)
            for i, (_, text) in enumerate(negatives[:num_negatives], start=1):
                columns[f"negative_{i}"].append(text)
        if stats["records"] == 0:
            raise InputError("no triplet records", path=source_name)
        if not columns["anchor"]:
            raise InputError(f"no usable train records ({dict(stats)})", path=source_name, field="split")
        train = datasets.Dataset.from_dict(columns)
        if max_train_samples is not None and len(train) > max_train_samples:
            train = train.shuffle(seed=seed).select(range(max_train_samples))
        stats["train_rows"] = len(train)
        stats["dev_queries"] = len(dev_queries)
        stats["dev_docs"] = len(dev_corpus)
        if stats["skipped_too_few_negatives"]:
            logger.warning("%s: skipped %d train records with fewer than %d usable negatives",
                           source_name, stats["skipped_too_few_negatives"], num_negatives)
        dev = None
        if dev_queries:
            dev = RetrievalDataset("triplets-dev", dev_corpus, dev_queries, dev_qrels, split="dev",
                                   source=source_name)
        return cls(train=train, dev=dev, stats=dict(stats))


def truncate_to_tokens(texts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Cut each text after its first ``max_tokens`` tokens, at a character boundary of the original text.

    sentence-transformers has one ``max_seq_length`` per model; cutting queries here is how queries get
    their own (shorter) limit without re-tokenising through a lossy decode.
    """
    enc = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens,
                    return_offsets_mapping=True)
    out = []
    for text, offsets in zip(texts, enc["offset_mapping"]):
        out.append(text[: offsets[-1][1]] if offsets and len(offsets) >= max_tokens else text)
    return out
