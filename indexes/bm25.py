"""BM25 over bm25s: a sparse lexical baseline that builds in about a second on NFCorpus.

Defaults follow bm25s' documented setup (Lucene BM25, k1=1.5, b=0.75, English stopwords, Snowball
English stemmer via PyStemmer), which is what bm25s' published BEIR figures use.

Example:
    >>> idx = BM25Index.build(["d1", "d2"], ["aspirin lowers fever", "insulin treats diabetes"])
    >>> idx.search({"q": "which drug lowers a fever"}, k=1)["q"].keys()
    dict_keys(['d1'])
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

from colmed.core.errors import InputError
from colmed.indexes.base import IndexManifest, read_docs, write_docs


@dataclass(frozen=True)
class BM25Settings:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str | None = "en"  # None: no stopword removal
    stemmer: str | None = "english"


class BM25Index:
    """An in-memory bm25s index with string doc ids; implements :class:`colmed.indexes.base.Retriever`."""

    def __init__(self, retriever, doc_ids: list[str], settings: BM25Settings, titles: list[str] | None = None):
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.titles = titles or [""] * len(doc_ids)
        self.settings = settings
        self._stemmer = _make_stemmer(settings.stemmer)

    @classmethod
    def build(cls, doc_ids: list[str], texts: list[str], titles: list[str] | None = None,
              show_progress: bool = False, **settings) -> "BM25Index":
        """Index ``texts`` (positions align with ``doc_ids``); bm25s' progress bars only with ``show_progress``."""
        bm25s = _bm25s()
        cfg = BM25Settings(**settings)
        tokens = _sorted_vocabulary(bm25s.tokenize(texts, stopwords=cfg.stopwords,
                                                   stemmer=_make_stemmer(cfg.stemmer), show_progress=show_progress))
        retriever = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
        retriever.index(tokens, show_progress=show_progress)
        return cls(retriever, list(doc_ids), cfg, titles)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        bm25s = _bm25s()
        return bm25s.tokenize(texts, stopwords=self.settings.stopwords, stemmer=self._stemmer,
                              return_ids=False, show_progress=False)

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every document, in position order."""
        tokens = [t for t in self._tokenize([query])[0] if t in self.retriever.vocab_dict]
        if not tokens:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        return self.retriever.get_scores(tokens)

    def search(self, queries: Mapping[str, str], k: int = 100) -> dict[str, dict[str, float]]:
        qids = list(queries)
        if not qids:
            return {}
        k = min(k, len(self.doc_ids))
        tokens = self._tokenize([queries[q] for q in qids])
        # bm25s cannot look up a query with no known token; those score zero everywhere -> no hits.
        known = [[t for t in toks if t in self.retriever.vocab_dict] for toks in tokens]
        results: dict[str, dict[str, float]] = {q: {} for q in qids}
        rows = [i for i, toks in enumerate(known) if toks]
        if rows:
            docs, scores = self.retriever.retrieve([known[i] for i in rows], k=k, show_progress=False,
                                                   n_threads=0)
            for r, i in enumerate(rows):
                results[qids[i]] = {self.doc_ids[int(d)]: float(s) for d, s in zip(docs[r], scores[r]) if s > 0}
        return results

    def save(self, index_dir: str | Path) -> None:
        self.retriever.save(str(Path(index_dir) / "bm25s"))
        write_docs(index_dir, self.doc_ids, self.titles)

    @classmethod
    def load(cls, index_dir: str | Path, manifest: IndexManifest | None = None, **_) -> "BM25Index":
        bm25s = _bm25s()
        manifest = manifest or IndexManifest.read(index_dir)
        retriever = bm25s.BM25.load(str(Path(index_dir) / "bm25s"))
        doc_ids, titles = read_docs(index_dir)
        known = set(BM25Settings.__dataclass_fields__)
        settings = BM25Settings(**{k: v for k, v in manifest.settings.items() if k in known})
        return cls(retriever, doc_ids, settings, titles)


BM25_METHODS = ("robertson", "lucene", "bm25l", "bm25+", "atire")


@lru_cache(maxsize=1)
def _bm25s():
    """bm25s, with the DEBUG level it gives its own logger on import undone once, so that its records
    ("Building index from IDs objects") follow the application's logging configuration like any library's."""
    import bm25s

    if logging.getLogger("bm25s").level == logging.DEBUG:
        logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


def _sorted_vocabulary(tokenized):
    """The same tokens with ids numbered in sorted token order.

    bm25s numbers stemmed tokens in ``set`` order, which changes with ``PYTHONHASHSEED``: two builds of one
    corpus then rank alike but differ byte for byte. Sorted ids make an index a pure function of its corpus.
    """
    from bm25s.tokenization import Tokenized

    order = sorted(tokenized.vocab, key=tokenized.vocab.get)  # tokens by their old id
    new_id = {tok: i for i, tok in enumerate(sorted(tokenized.vocab))}
    remap = [new_id[tok] for tok in order]
    ids = [[remap[i] for i in doc] for doc in tokenized.ids]
    return Tokenized(ids=ids, vocab={tok: new_id[tok] for tok in sorted(tokenized.vocab)})


def _make_stemmer(name: str | None):
    if not name:
        return None
    import Stemmer  # PyStemmer

    if name not in Stemmer.algorithms():
        raise InputError(f"unknown stemmer {name!r}; PyStemmer has {', '.join(Stemmer.algorithms())}",
                         field="stemmer")
    return Stemmer.Stemmer(name)


def check_bm25_settings(cfg: BM25Settings) -> None:
    """Refuse settings bm25s would reject or misread, before any document is read."""
    _bm25s()
    from bm25s.tokenization import _infer_stopwords  # bm25s' own table of stopword languages

    if cfg.method not in BM25_METHODS:
        raise InputError(f"unknown BM25 method {cfg.method!r}; choose from {', '.join(BM25_METHODS)}",
                         field="method")
    if cfg.k1 < 0 or not 0 <= cfg.b <= 1:
        raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={cfg.k1}, b={cfg.b})",
                         field="k1" if cfg.k1 < 0 else "b")
    if cfg.stopwords:
        try:
            _infer_stopwords(cfg.stopwords)
        except ValueError:
            raise InputError(f"unknown stopword list {cfg.stopwords!r} (bm25s languages: en, en_plus, de, fr, "
                             "es, it, pt, nl, ru, sv, no, da, tr, zh, ko ...)", field="stopwords") from None
    _make_stemmer(cfg.stemmer)


def build_bm25_in_memory(dataset, progress: bool = False, **settings) -> tuple[BM25Index, IndexManifest]:
    """Index ``dataset.corpus`` with bm25s in memory; returns the index and its manifest.

    ``progress`` shows bm25s' progress bars (tokenising, stemming, scoring); a library call is silent.
    """
    import time

    unknown = sorted(set(settings) - set(BM25Settings.__dataclass_fields__))
    if unknown:
        raise InputError(f"unknown BM25 setting(s) {', '.join(unknown)}; known: "
                         f"{', '.join(BM25Settings.__dataclass_fields__)}", field=unknown[0])
    # None keeps a default; False turns stopwords or stemming off (stored as None).
    settings = {k: (None if v is False else v) for k, v in settings.items() if v is not None}
    check_bm25_settings(BM25Settings(**settings))
    t0 = time.perf_counter()
    docs = list(dataset.corpus.values())
    index = BM25Index.build([d.doc_id for d in docs], [d.full_text for d in docs], [d.title for d in docs],
                            show_progress=progress, **settings)
    manifest = IndexManifest(kind="bm25", model="bm25s", num_docs=len(docs), settings=asdict(index.settings),
                             stats={"build_seconds": round(time.perf_counter() - t0, 3),
                                    "vocab_size": len(index.retriever.vocab_dict)})
    return index, manifest


def build_bm25_index(dataset, out_dir: str | Path, progress: bool = False, **settings) -> IndexManifest:
    """Builder for ``build_index("bm25", ...)``: :func:`build_bm25_in_memory`, then saved into ``out_dir``."""
    index, manifest = build_bm25_in_memory(dataset, progress=progress, **settings)
    index.save(out_dir)
    return manifest
