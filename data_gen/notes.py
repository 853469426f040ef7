"""Source notes: load them (JSONL, BEIR corpus folder, hub dataset), sample, shard and chunk them.

Per-record problems (a line that is not UTF-8 or not JSON, a missing or empty text field, a duplicate
id) never stop a run: each is counted and listed with its file, line and field in
:class:`NoteIssues`, which the pipeline writes to ``rejects.jsonl`` and the manifest. A source that
cannot be read at all (missing file, a hub dataset without the text field, no usable note) is an
:class:`~colmed.core.errors.InputError`.

Example:
    >>> notes = [Note("n1", "Chest pain. " * 30)]
    >>> [p.passage_id for p in chunk_note(notes[0], max_words=40, min_words=5)]
    ['n1#0', 'n1#1']
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, TypeVar

from colmed.core.errors import InputError
from colmed.data.datasets import full_text

T = TypeVar("T")


@dataclass(frozen=True)
class Note:
    """One source document (a clinical note, an abstract ...)."""

    note_id: str
    text: str
    title: str = ""


@dataclass(frozen=True)
class Passage:
    """A chunk of a note short enough for the trainers; ``passage_id`` is ``<note_id>#<i>``."""

    passage_id: str
    note_id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        return full_text(self.title, self.text)  # as a corpus Document: the miner and trainers see the same


@dataclass
class NoteIssues:
    """Bad source records, counted by problem and listed with where they are."""

    counts: dict[str, int] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)

    def add(self, problem: str, path: str | None, line: int | None, field_name: str | None, note_id=None):
        self.counts[problem] = self.counts.get(problem, 0) + 1
        self.items.append({"kind": "bad_note", "problem": problem, "path": path, "line": line,
                           "field": field_name, "note_id": note_id})


def load_notes(source: str | Path, text_field: str = "text", id_field: str = "id", title_field: str = "title",
               hub_split: str = "train") -> tuple[list[Note], NoteIssues]:
    """Load notes from a JSONL file, a BEIR folder (its ``corpus.jsonl`` only), a folder of JSONL notes files
    (every ``*.jsonl`` in it, in name order, e.g. ``../shared/notes``) or a hub dataset name.

    Returns the notes in source order and the issues met. Raises :class:`InputError` when nothing
    usable is found.
    """
    p = Path(source)
    issues = NoteIssues()
    if p.is_dir() and (p / "corpus.jsonl").is_file():
        # BEIR names its fields _id/title/text; an explicit non-default --text-field still wins.
        notes = _read_jsonl_notes(p / "corpus.jsonl", text_field, "_id" if id_field == "id" else id_field,
                                  title_field, issues)
    elif p.is_dir():
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise InputError("a notes folder must be a BEIR folder (corpus.jsonl) or hold *.jsonl notes files", path=p)
        seen: set[str] = set()  # an id twice, even in two files, is one note: the later one is a counted duplicate
        notes = [n for f in files for n in _read_jsonl_notes(f, text_field, id_field, title_field, issues, seen)]
    elif p.is_file():
        notes = _read_jsonl_notes(p, text_field, id_field, title_field, issues)
    elif not _looks_like_hub_name(str(source)):
        raise InputError("notes file or folder not found", path=p)
    else:
        notes = _read_hub_notes(str(source), text_field, id_field, title_field, hub_split, issues)
    if not notes:
        raise InputError(f"no usable notes (problems: {issues.counts or 'none'})", path=source, field=text_field)
    return notes, issues


def _looks_like_hub_name(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and Path(name).suffix not in (".jsonl", ".json", ".txt"))


def _read_jsonl_notes(path: Path, text_field: str, id_field: str, title_field: str,
                      issues: NoteIssues, seen: set[str] | None = None) -> list[Note]:
    notes: list[Note] = []
    seen = set() if seen is None else seen
    where = str(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                issues.add("not_utf8", where, lineno, None)
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                issues.add("malformed_json", where, lineno, None)
                continue
            if not isinstance(rec, dict):
                issues.add("not_an_object", where, lineno, None)
                continue
            note = _make_note(rec, text_field, id_field, title_field, f"{path.stem}-{lineno}", issues,
                              where, lineno)
            _keep_unique(note, notes, seen, issues, where, lineno, id_field)
    return notes


def _keep_unique(note, notes: list, seen: set, issues, where, line, id_field: str) -> None:
    """Append ``note`` unless it is ``None`` (already counted) or its id was seen (counted here)."""
    if note is None:
        return
    if note.note_id in seen:
        issues.add("duplicate_id", where, line, id_field, note.note_id)
        return
    seen.add(note.note_id)
    notes.append(note)


def _make_note(rec: dict, text_field: str, id_field: str, title_field: str, fallback_id: str,
               issues: NoteIssues, where: str | None, line: int | None) -> Note | None:
    raw_id = rec.get(id_field)
    note_id = str(raw_id).strip() if raw_id is not None else ""
    if not note_id:
        note_id = fallback_id  # ids are provenance only; a stable positional id is an honest stand-in
    if text_field not in rec or rec[text_field] is None:
        issues.add("missing_text", where, line, text_field, note_id)
        return None
    text = rec[text_field]
    if not isinstance(text, str):
        issues.add("text_not_a_string", where, line, text_field, note_id)
        return None
    if not text.strip():
        issues.add("empty_text", where, line, text_field, note_id)
        return None
    title = rec.get(title_field)
    return Note(note_id, text.strip(), str(title).strip() if isinstance(title, str) else "")


def _read_hub_notes(name: str, text_field: str, id_field: str, title_field: str, split: str,
                    issues: NoteIssues) -> list[Note]:
    import datasets  # deferred: heavy

    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown repo, missing split: one line for the user
        raise InputError(f"cannot load from the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                         path=name) from None
    if text_field not in rows.column_names:
        raise InputError(f"no such column; columns are {', '.join(rows.column_names)}", path=name,
                         field=text_field)
    notes, seen = [], set()
    for i, rec in enumerate(rows):
        note = _make_note(rec, text_field, id_field, title_field, f"{name.split('/')[-1]}-{i}", issues, name, i)
        _keep_unique(note, notes, seen, issues, name, i, id_field)
    return notes


def sample_notes(notes: list[T], num_notes: int | None, seed: int) -> list[T]:
    """``num_notes`` notes (or any items) drawn with ``seed``, kept in source order; all of them when ``None``."""
    if not num_notes or num_notes >= len(notes):
        return list(notes)
    keep = sorted(random.Random(seed).sample(range(len(notes)), num_notes))
    return [notes[i] for i in keep]


def stable_fraction(key: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a string: same on every machine and Python run."""
    digest = hashlib.sha1(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def in_shard(note_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``note_id`` belongs to shard ``(i, n)``: a hash split, independent of note order."""
    if shard is None:
        return True
    i, n = shard
    return int(stable_fraction(note_id, "shard") * n) == i


def note_split(note_id: str, dev_fraction: float, seed: int) -> str:
    """``"dev"`` or ``"train"`` for every passage and query of a note, so no note straddles splits."""
    return "dev" if stable_fraction(note_id, f"split-{seed}") < dev_fraction else "train"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_WS = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences (and note lines: section headers, list items) of ``text``, whitespace-normalised."""
    return [s for s in (_WS.sub(" ", part).strip() for part in _SENTENCE_END.split(text)) if s]


def chunk_note(note: Note, max_words: int = 200, min_words: int = 20) -> list[Passage]:
    """Pack whole sentences into passages of at most ``max_words`` words.

    A sentence longer than ``max_words`` is cut at word boundaries; a short tail is merged into the
    previous passage. A note shorter than ``min_words`` yields no passage.
    """
    pieces: list[list[str]] = []
    for sentence in split_sentences(note.text):
        words = sentence.split()
        for start in range(0, len(words), max_words):
            pieces.append(words[start:start + max_words])
    chunks: list[list[str]] = []
    current: list[str] = []
    for words in pieces:
        if current and len(current) + len(words) > max_words:
            chunks.append(current)
            current = []
        current = current + words
    if current:
        chunks.append(current)
    if len(chunks) > 1 and len(chunks[-1]) < min_words:
        tail = chunks.pop()
        chunks[-1] = chunks[-1] + tail
    chunks = [c for c in chunks if len(c) >= min_words]
    return [Passage(f"{note.note_id}#{i}", note.note_id, " ".join(c), note.title) for i, c in enumerate(chunks)]


def iter_passages(notes: Iterable[Note], max_words: int, min_words: int) -> Iterable[Passage]:
    for note in notes:
        yield from chunk_note(note, max_words, min_words)
