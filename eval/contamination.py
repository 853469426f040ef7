"""Train/test contamination: does a training set contain an evaluation set's queries or their answers?

Three levels of overlap are looked for between training records (query, positive) and an evaluation
split (its judged queries and the documents judged relevant to them):

- **exact**: equal after normalisation (Unicode NFKC, case-folded, punctuation and spacing removed),
  compared by sha256;
- **near**: MinHash LSH (``datasketch``) over the set of stemmed content words (PyStemmer, Lucene's
  English stopwords from ``bm25s``), each candidate confirmed by its exact Jaccard similarity
  (default >= 0.6). This catches reworded copies and light paraphrases ("statin side effects in older
  adults" / "in older adults, what side effects do statins have?");
- **semantic** (optional): cosine similarity of sentence embeddings (any encoder with
  ``encode_queries``, e.g. :class:`colmed.bi_encoder.encoder.DenseEncoder`) >= 0.9 between training and test
  queries, for paraphrases that share few words.

What is forbidden and what is not is stated in every report. Training on a benchmark's *unlabelled
corpus* (GPL-style: a training positive is a corpus document that some test query happens to judge
relevant) is legitimate and reported as "corpus use". Training on the benchmark's *test queries* (or
paraphrases of them) is not, and neither is a training positive that copies a test query (ArguAna's
queries are corpus documents) or a whole leaked (test query, relevant document) pair.

Example:
    >>> from colmed.data.datasets import Document, RetrievalDataset
    >>> ds = RetrievalDataset("toy", {"d1": Document("d1", "Statins lower LDL cholesterol in adults.")},
    ...                       {"q1": "What are the side effects of statins in older adults?"}, {"q1": {"d1": 1}})
    >>> report = contamination_report(["In older adults, what side effects do statins have?",
    ...                                "insulin dosing for type 1 diabetes"], ds)
    >>> report["verdict"]
    'CONTAMINATED: 1 of 2 training records overlap the test split of toy (test queries or leaked pairs)'
    >>> kept, removed = decontaminate(["insulin dosing for type 1 diabetes", "side effects of statins in older adults"], [ds])
    >>> kept, [r["reasons"] for r in removed]
    (['insulin dosing for type 1 diabetes'], [['toy: train_query~eval_query (near, jaccard=0.83, q1)']])
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)

FORBIDDEN = "forbidden (test queries or their paraphrases must not be trained on)"
ALLOWED_CORPUS_USE = "allowed (corpus use, GPL-style: unlabelled benchmark documents as positives)"


@dataclass
class ContaminationSettings:
    """Thresholds of the overlap checks (see the module docstring)."""

    jaccard_threshold: float = 0.6
    num_perm: int = 128
    min_tokens: int = 3  # shorter texts match only exactly: two-word titles collide by chance
    semantic_threshold: float = 0.9
    max_examples: int = 5


@dataclass
class TrainItem:
    """One training record reduced to what is checked."""

    record_id: str
    query: str
    positive: str = ""
    positive_id: str = ""


def normalise_text(text: str) -> str:
    """Case-folded NFKC text with punctuation dropped and whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(text))


def text_hash(text: str) -> str:
    """sha256 of :func:`normalise_text` (the exact-duplicate key)."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


class _Shingler:
    """Stemmed content-word sets (Lucene English stopwords, Snowball stemmer)."""

    def __init__(self):
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        self.stemmer = Stemmer.Stemmer("english")
        self.stopwords = set(STOPWORDS_EN)

    def __call__(self, text: str) -> set[str]:
        words = [w for w in normalise_text(text).split() if w not in self.stopwords]
        return set(self.stemmer.stemWords(words))


def _as_items(records: Iterable[Any]) -> list[TrainItem]:
    items = []
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            items.append(TrainItem(f"#{i}", rec))
        elif isinstance(rec, TrainItem):
            items.append(rec)
        elif isinstance(rec, dict):
            items.append(TrainItem(str(rec.get("query_id", f"#{i}")), rec.get("query") or "",
                                   rec.get("positive") or "", str(rec.get("positive_id") or "")))
        else:  # TripletRecord or anything shaped like it
            items.append(TrainItem(str(getattr(rec, "query_id", f"#{i}")), getattr(rec, "query", "") or "",
                                   getattr(rec, "positive", "") or "", str(getattr(rec, "positive_id", "") or "")))
    return items


class OverlapIndex:
    """Exact-hash and MinHash-LSH lookup over a keyed set of evaluation texts.

    Example:
        >>> idx = OverlapIndex({"q1": "Does coffee raise blood pressure?"})
        >>> [(m["key"], m["level"]) for m in idx.match("does COFFEE raise blood-pressure")]
        [('q1', 'exact')]
    """

    def __init__(self, texts: dict[str, str], settings: ContaminationSettings | None = None,
                 shingler: _Shingler | None = None):
        from datasketch import MinHash, MinHashLSH

        self.settings = s = settings or ContaminationSettings()
        self.shingle = shingler or _Shingler()
        self.texts = texts
        self.by_hash: dict[str, list[str]] = {}
        for key, text in texts.items():
            self.by_hash.setdefault(text_hash(text), []).append(key)
        self.sets = {key: self.shingle(text) for key, text in texts.items()}
        self.lsh = MinHashLSH(threshold=s.jaccard_threshold, num_perm=s.num_perm)
        keys = [k for k, toks in self.sets.items() if len(toks) >= s.min_tokens]
        for key, mh in zip(keys, MinHash.bulk([[t.encode() for t in self.sets[k]] for k in keys],
                                              num_perm=s.num_perm)):
            self.lsh.insert(key, mh)
        self._minhash = MinHash

    def signatures(self, texts: Iterable[str]) -> dict[str, tuple[str, set[str], Any]]:
        """text -> (exact hash, content-word set, MinHash or None) for each distinct text, MinHashes in one
        batch (one MinHash per call would redraw its 128 permutations each time: the check's main cost)."""
        out = {}
        for text in dict.fromkeys(t for t in texts if t):
            out[text] = (text_hash(text), self.shingle(text), None)
        long = [t for t, (_, toks, _) in out.items() if len(toks) >= self.settings.min_tokens]
        for text, mh in zip(long, self._minhash.bulk([[w.encode() for w in out[t][1]] for t in long],
                                                     num_perm=self.settings.num_perm)):
            out[text] = (out[text][0], out[text][1], mh)
        return out

    def match(self, text: str, signature: tuple[str, set[str], Any] | None = None) -> list[dict]:
        """Evaluation keys that ``text`` duplicates: ``[{key, level: exact|near, jaccard}]``. ``signature`` is
        the text's entry of :meth:`signatures` (the same settings), when already computed."""
        if not text:
            return []
        digest, tokens, mh = signature or self.signatures([text])[text]
        exact = self.by_hash.get(digest, [])
        found = [{"key": k, "level": "exact", "jaccard": 1.0} for k in exact]
        if mh is None:
            return found
        for key in self.lsh.query(mh):
            if key in exact:
                continue
            other = self.sets[key]
            jaccard = len(tokens & other) / len(tokens | other)
            if jaccard >= self.settings.jaccard_threshold:  # LSH candidates can be false positives
                found.append({"key": key, "level": "near", "jaccard": round(jaccard, 4)})
        return found


def _memo(fn):
    cache: dict[str, list[dict]] = {}

    def call(text: str) -> list[dict]:
        if text not in cache:
            cache[text] = fn(text)
        return cache[text]

    return call


def _relevant_docs(dataset) -> dict[str, str]:
    return {d: dataset.corpus[d].full_text for q in dataset.queries for d, rel in dataset.qrels.get(q, {}).items()
            if rel > 0 and d in dataset.corpus}


def _semantic_matches(encoder, train_queries: list[str], eval_queries: dict[str, str],
                      threshold: float) -> list[tuple[int, str, float]]:
    if not train_queries or not eval_queries:
        return []
    keys = list(eval_queries)
    unique = list(dict.fromkeys(train_queries))
    position = {t: i for i, t in enumerate(unique)}
    a = np.asarray(encoder.encode_queries(unique), dtype=np.float32)
    b = np.asarray(encoder.encode_queries([eval_queries[k] for k in keys]), dtype=np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    found: dict[int, list[tuple[str, float]]] = {}
    for start in range(0, len(a), 4096):  # bounded memory for large training sets
        sims = a[start:start + 4096] @ b.T
        for i, j in zip(*np.nonzero(sims >= threshold)):
            found.setdefault(start + int(i), []).append((keys[int(j)], float(sims[i, j])))
    return [(r, key, cos) for r, text in enumerate(train_queries) for key, cos in found.get(position[text], [])]


class _RememberingEncoder:
    """An encoder that encodes each distinct text once: the training queries are checked against every
    benchmark in turn, and re-encoding them per benchmark cost minutes on a CPU."""

    def __init__(self, encoder):
        self.encoder, self.model_name, self._seen = encoder, _encoder_name(encoder), {}

    def encode_queries(self, texts: list[str]):
        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if new:
            self._seen.update(zip(new, np.asarray(self.encoder.encode_queries(new), dtype=np.float32)))
        return np.stack([self._seen[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def _snippet(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def _encoder_name(encoder) -> str | None:
    if encoder is None:
        return None
    return str(getattr(encoder, "model_name", None) or type(encoder).__name__)


def find_overlaps(records: Iterable[Any], dataset, settings: ContaminationSettings | None = None,
                  encoder=None) -> tuple[list[TrainItem], dict[str, list[dict]]]:
    """Every overlap of each training record with ``dataset``'s test split.

    Returns the training items and ``{check name: [{record, eval_key, level, score}]}`` for the checks
    ``train_query~eval_query``, ``train_positive~eval_query``, ``train_positive~relevant_doc`` and
    ``leaked_test_pair``.
    """
    s = settings or ContaminationSettings()
    items = _as_items(records)
    shingler = _Shingler()
    q_index = OverlapIndex(dict(dataset.queries), s, shingler)
    relevant = _relevant_docs(dataset)
    d_index = OverlapIndex(relevant, s, shingler)
    hits: dict[str, list[dict]] = {"train_query~eval_query": [], "train_positive~eval_query": [],
                                   "train_positive~relevant_doc": [], "leaked_test_pair": []}
    query_hits: dict[int, set[str]] = {}
    # Labelled training sets repeat texts (one query, many judged documents): match each text once.
    signature = q_index.signatures([t for it in items for t in (it.query, it.positive)])
    q_match = _memo(lambda text: q_index.match(text, signature.get(text)))
    d_match = _memo(lambda text: d_index.match(text, signature.get(text)))
    for i, item in enumerate(items):
        for m in q_match(item.query):
            hits["train_query~eval_query"].append({"record": i, "eval_key": m["key"], "level": m["level"],
                                                   "score": m["jaccard"]})
            query_hits.setdefault(i, set()).add(m["key"])
        for m in q_match(item.positive):
            hits["train_positive~eval_query"].append({"record": i, "eval_key": m["key"], "level": m["level"],
                                                      "score": m["jaccard"]})
        doc_matches = [dict(m) for m in d_match(item.positive)] if item.positive else []
        if item.positive_id in relevant and not any(m["key"] == item.positive_id for m in doc_matches):
            doc_matches.append({"key": item.positive_id, "level": "id", "jaccard": None})
        for m in doc_matches:
            hits["train_positive~relevant_doc"].append({"record": i, "eval_key": m["key"], "level": m["level"],
                                                        "score": m["jaccard"]})
    if encoder is not None:
        for i, key, cos in _semantic_matches(encoder, [it.query for it in items], dict(dataset.queries),
                                             s.semantic_threshold):
            if key not in query_hits.get(i, set()):
                hits["train_query~eval_query"].append({"record": i, "eval_key": key, "level": "semantic",
                                                       "score": round(cos, 4)})
                query_hits.setdefault(i, set()).add(key)
    # A leaked pair: the record's query duplicates a test query AND its positive is judged relevant to it.
    doc_hits: dict[int, set[str]] = {}
    for h in hits["train_positive~relevant_doc"]:
        doc_hits.setdefault(h["record"], set()).add(h["eval_key"])
    for i, qkeys in query_hits.items():
        for qk in sorted(qkeys):
            judged = {d for d, rel in dataset.qrels.get(qk, {}).items() if rel > 0}
            for d in sorted(judged & doc_hits.get(i, set())):
                hits["leaked_test_pair"].append({"record": i, "eval_key": f"{qk}->{d}", "level": "pair",
                                                 "score": None})
    return items, hits


def contamination_report(train_records_or_texts: Iterable[Any], dataset,
                         settings: ContaminationSettings | None = None, encoder=None, overlaps=None) -> dict:
    """Overlap between a training set and ``dataset``'s test split, as a JSON-ready dict.

    ``train_records_or_texts``: :class:`colmed.data.triplets.TripletRecord` objects, dicts with ``query``
    (and optionally ``positive``/``positive_id``/``query_id``), or plain query strings.
    ``encoder`` (optional): anything with ``encode_queries(list[str])`` for the semantic check.
    ``overlaps``: :func:`find_overlaps`'s result for these records and ``dataset``, when already computed.
    """
    s = settings or ContaminationSettings()
    items, hits = overlaps or find_overlaps(train_records_or_texts, dataset, s, encoder)
    relevant = _relevant_docs(dataset)
    policies = {"train_query~eval_query": FORBIDDEN, "train_positive~eval_query": FORBIDDEN,
                "train_positive~relevant_doc": ALLOWED_CORPUS_USE, "leaked_test_pair": FORBIDDEN}
    checks = {}
    for name, found in hits.items():
        levels: dict[str, int] = {}
        for h in found:
            levels[h["level"]] = levels.get(h["level"], 0) + 1
        examples, shown_keys, shown_texts = [], set(), set()
        for h in found:  # one example per test item and training text, so the examples are diverse
            if len(examples) >= s.max_examples:
                break
            it = items[h["record"]]
            key = h["eval_key"]
            train_text = it.positive if "positive" in name else it.query
            if key in shown_keys or train_text in shown_texts:
                continue
            shown_keys.add(key)
            shown_texts.add(train_text)
            eval_text = dataset.queries.get(key) or relevant.get(key) or dataset.queries.get(key.split("->")[0], "")
            examples.append({"record_id": it.record_id, "train_text": _snippet(train_text),
                             "eval_id": key, "eval_text": _snippet(eval_text), "level": h["level"],
                             "score": h["score"]})
        checks[name] = {"policy": policies[name], "matches": len(found), "by_level": levels,
                        "records": len({h["record"] for h in found}),
                        "eval_items": len({h["eval_key"] for h in found}), "examples": examples}
    forbidden = sorted({h["record"] for n, f in hits.items() if policies[n] == FORBIDDEN for h in f})
    corpus_use = {h["record"] for h in hits["train_positive~relevant_doc"]}
    name = dataset.name
    verdict = ("clean: no training query or positive overlaps the test queries of " + name if not forbidden else
               f"CONTAMINATED: {len(forbidden)} of {len(items)} training records overlap the {dataset.split} split "
               f"of {name} (test queries or leaked pairs)")
    return {
        "dataset": name, "split": dataset.split, "dataset_fingerprint": dataset.fingerprint,
        "qrels_hash": dataset.qrels_hash, "train_records": len(items), "eval_queries": len(dataset.queries),
        "eval_relevant_docs": len(relevant),
        "method": {
            "normalisation": "Unicode NFKC, case-folded, punctuation dropped, whitespace collapsed",
            "exact": "sha256 of the normalised text",
            "near": (f"MinHash LSH (datasketch, num_perm={s.num_perm}) over stemmed content-word sets, confirmed by "
                     f"exact Jaccard >= {s.jaccard_threshold}; texts under {s.min_tokens} content words match "
                     f"exactly only"),
            "semantic": (f"cosine >= {s.semantic_threshold} between query embeddings of {_encoder_name(encoder)}"
                         if encoder is not None else None),
            "settings": asdict(s)},
        "checks": checks,
        "contaminated_records": len(forbidden),
        "contaminated_record_ids": [items[i].record_id for i in forbidden],
        "corpus_use_records": len(corpus_use),
        "verdict": verdict,
    }


def decontaminate(records: Sequence[Any], datasets: Iterable[Any], settings: ContaminationSettings | None = None,
                  encoder=None, drop_corpus_use: bool = False,
                  overlaps: dict[str, Any] | None = None) -> tuple[list[Any], list[dict]]:
    """Split ``records`` into (kept, removed) against every dataset's test split.

    A record is removed when its query duplicates a test query (exact, near or semantic), its positive
    duplicates a test query, or it carries a leaked (test query, relevant document) pair; with
    ``drop_corpus_use`` also when its positive is a document judged relevant to a test query. Each
    removed entry is ``{"index", "record_id", "record", "reasons"}`` (``record`` as given, or its
    ``to_dict()``), ready for a ``removed.jsonl`` log. Kept records are returned unchanged, in order.
    ``overlaps``: dataset name -> :func:`find_overlaps`'s result, where already computed.
    """
    records = list(records)
    reasons: dict[int, list[str]] = {}
    checks = ["train_query~eval_query", "train_positive~eval_query", "leaked_test_pair"]
    if drop_corpus_use:
        checks.append("train_positive~relevant_doc")
    items: list[TrainItem] = []
    for ds in datasets:
        items, hits = (overlaps or {}).get(ds.name) or find_overlaps(records, ds, settings, encoder)
        for name in checks:
            for h in hits[name]:
                score = "" if h["score"] is None else (f", jaccard={h['score']:.2f}" if h["level"] in ("near", "exact")
                                                       else f", cosine={h['score']:.2f}")
                reasons.setdefault(h["record"], []).append(f"{ds.name}: {name} ({h['level']}{score}, {h['eval_key']})")
    kept = [r for i, r in enumerate(records) if i not in reasons]
    removed = [{"index": i, "record_id": items[i].record_id if items else f"#{i}",
                "record": records[i].to_dict() if hasattr(records[i], "to_dict") else records[i],
                "reasons": sorted(set(reasons[i]))} for i in sorted(reasons)]
    return kept, removed


def report_to_markdown(report: dict) -> str:
    """A short markdown section for generate/study/benchmark reports."""
    lines = [f"### Contamination vs {report['dataset']} ({report['split']})", "",
             f"**{report['verdict']}**", "",
             f"{report['train_records']:,} training records vs {report['eval_queries']:,} test queries and "
             f"{report['eval_relevant_docs']:,} documents judged relevant to them.", "",
             "| check | policy | matches | training records | test items | by level |", "|---|---|---|---|---|---|"]
    for name, c in report["checks"].items():
        levels = ", ".join(f"{k}: {v}" for k, v in sorted(c["by_level"].items())) or "-"
        lines.append(f"| {name} | {c['policy']} | {c['matches']} | {c['records']} | {c['eval_items']} | {levels} |")
    lines += ["", "Method: " + "; ".join(f"{k}: {v}" for k, v in report["method"].items()
                                         if k != "settings" and v), ""]
    for name, c in report["checks"].items():
        if c["examples"]:
            lines += [f"Examples ({name}):", ""]
            for e in c["examples"]:
                score = "" if e["score"] is None else f" {e['score']:.2f}"
                lines.append(f"- [{e['level']}{score}] train `{e['record_id']}`: \"{e['train_text']}\" ~ "
                             f"test `{e['eval_id']}`: \"{e['eval_text']}\"")
            lines.append("")
    return "\n".join(lines)


def check_training_set(records: Sequence[Any], datasets: Iterable[Any], out_dir, *, decontaminate_records: bool = False,
                       settings: ContaminationSettings | None = None, encoder=None,
                       drop_corpus_use: bool = False) -> tuple[list[Any], dict]:
    """The contamination stage of ``colmed generate`` / ``colmed study``, in one call.

    Writes ``contamination.json`` and ``contamination.md`` (one report per benchmark) into ``out_dir``
    and, with ``decontaminate_records``, removes overlapping records and logs each removal with its
    reasons in ``decontamination_removed.jsonl``. Returns (records to train on, summary dict).

    Example:
        >>> import tempfile
        >>> from colmed.data.datasets import Document, RetrievalDataset
        >>> ds = RetrievalDataset("toy", {"d1": Document("d1", "x")}, {"q1": "does coffee raise blood pressure"},
        ...                       {"q1": {"d1": 1}})
        >>> kept, summary = check_training_set(["Does coffee raise blood pressure?", "aspirin dose"], [ds],
        ...                                    tempfile.mkdtemp(), decontaminate_records=True)
        >>> kept, summary["removed"], summary["per_dataset"]["toy"]["contaminated_records"]
        (['aspirin dose'], 1, 1)
    """
    from pathlib import Path

    from colmed.core.io import atomic_write, write_json, write_jsonl

    out = Path(out_dir)
    datasets = list(datasets)
    records = list(records)
    encoder = _RememberingEncoder(encoder) if encoder is not None else None
    overlaps = {ds.name: find_overlaps(records, ds, settings, encoder) for ds in datasets}
    reports = {ds.name: contamination_report(records, ds, settings, encoder, overlaps=overlaps[ds.name])
               for ds in datasets}
    kept, removed = records, []
    if decontaminate_records:
        kept, removed = decontaminate(records, datasets, settings, encoder, drop_corpus_use=drop_corpus_use,
                                      overlaps=overlaps)
        write_jsonl(out / "decontamination_removed.jsonl", removed)
    summary = {"per_dataset": {n: {k: r[k] for k in ("verdict", "contaminated_records", "corpus_use_records",
                                                    "train_records", "eval_queries")} for n, r in reports.items()},
               "decontaminated": decontaminate_records, "removed": len(removed), "kept": len(kept),
               "drop_corpus_use": drop_corpus_use}
    write_json(out / "contamination.json", {"summary": summary, "reports": reports})
    with atomic_write(out / "contamination.md") as f:
        f.write("## Train/test contamination\n\n")
        if decontaminate_records:
            f.write(f"--decontaminate removed {len(removed)} of {len(records)} training records "
                    f"(logged with reasons in decontamination_removed.jsonl).\n\n")
        f.write("\n".join(report_to_markdown(r) for r in reports.values()))
    return kept, summary


class TrainingSetCheck:
    """The contamination check a triplet writer applies before it writes (``colmed generate
    --contamination-check``, the study's ``data.contamination_check``).

    The test splits are loaded here, when the check is built, so a mistyped dataset fails before hours of
    generation. Calling the check with (records, output folder) writes the reports of
    :func:`check_training_set` into that folder and returns (records to write, summary): every record
    when only checking, the clean ones with ``decontaminate``.

    Example:
        >>> import tempfile
        >>> from importlib.resources import files
        >>> check = TrainingSetCheck([str(files("colmed") / "data" / "sample_medical")], decontaminate=True)
        >>> query = next(iter(check.datasets[0].queries.values()))
        >>> kept, summary = check([query, "insulin dosing for type 1 diabetes"], tempfile.mkdtemp())
        >>> kept, summary["removed"]
        (['insulin dosing for type 1 diabetes'], 1)
    """

    def __init__(self, datasets: Sequence[str], *, decontaminate: bool = False, encoder: Any = None,
                 settings: ContaminationSettings | None = None, split: str = "test"):
        from colmed.core.errors import InputError
        from colmed.data.datasets import load_dataset

        if not datasets:
            raise InputError("names no dataset to check against", field="contamination_check")
        # A benchmark without a local corpus (TREC-COVID here) is still checked for its test queries.
        self.datasets = [load_dataset(d, split=split, require_corpus=False) for d in datasets]
        self.decontaminate = decontaminate
        self.encoder = encoder
        self.settings = settings

    def describe(self) -> dict[str, Any]:
        """What the manifest records: the datasets (with fingerprints), the mode and the encoder."""
        return {"datasets": {d.name: {"split": d.split, "fingerprint": d.fingerprint, "qrels_hash": d.qrels_hash}
                             for d in self.datasets},
                "decontaminate": self.decontaminate, "semantic_encoder": _encoder_name(self.encoder)
                if self.encoder is not None else None, "settings": asdict(self.settings or ContaminationSettings())}

    def __call__(self, records: Sequence[Any], out_dir) -> tuple[list[Any], dict]:
        kept, summary = check_training_set(records, self.datasets, out_dir, decontaminate_records=self.decontaminate,
                                           settings=self.settings, encoder=self.encoder)
        return kept, {**summary, "check": self.describe()}
