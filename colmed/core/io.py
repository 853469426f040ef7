"""Small, dependency-free I/O helpers used by every colmed package.

Outputs are written atomically (temp file in the same directory, fsync, rename) so a crash never
leaves a half-written file where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from colmed.core.errors import IndexExistsError, InputError, OutputBusyError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file next to ``path``; on clean exit rename it over ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_write(p) as f:
        ...     _ = f.write("hello")
        >>> p.read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; an output follows the user's umask
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Atomically write records as JSON lines; returns the number written."""
    n = 0
    with atomic_write(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_text_lines(path: str | Path, missing: str = "file not found") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file, 1-based; a missing file or a line that is not
    UTF-8 is an :class:`InputError` naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(missing, path=path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"not valid UTF-8 ({e.reason})", path=path, line=lineno) from None


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line, 1-based.

    Raises :class:`InputError` naming the file and line for a missing file, bad UTF-8, bad JSON,
    a line that is not an object, or a missing/empty required field.
    """
    for lineno, line in read_text_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg})", path=path, line=lineno) from None
        if not isinstance(rec, dict):
            raise InputError("expected a JSON object", path=path, line=lineno)
        for key in required:
            if key not in rec or rec[key] is None:
                raise InputError("missing", path=path, line=lineno, field=key)
        yield lineno, rec


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# What an existing ``--out`` must hold before ``overwrite`` may replace it: the ``kind`` field of its
# manifest.json (or, for a study, its study_config.json). Anything else is a folder colmed did not write.
OUTPUT_KINDS: dict[str, tuple[str, ...]] = {
    "index": ("bm25", "dense", "colbert"),
    "triplets": ("colmed-triplets",),
    "model": ("colmed-bi-encoder", "colmed-colbert", "colbert-checkpoint"),
    "benchmark": ("colmed-benchmark",),
    "study": ("colmed-study",),
    "queries": ("colmed-queries",),  # LLM queries generated on Ray (colmed.data_gen.ray_pipeline)
}
_STUDY_MARKER = "study_config.json"


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_kind(path: str | Path) -> str | None:
    """Which colmed output ``path`` is (a key of :data:`OUTPUT_KINDS`), or None if colmed did not write it.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> output_kind(d) is None
        True
        >>> _ = (d / "manifest.json").write_text('{"kind": "bm25"}')
        >>> output_kind(d)
        'index'
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return None
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
        except (ValueError, AttributeError, OSError):
            kind = None
        for name, kinds in OUTPUT_KINDS.items():
            if kind in kinds:
                return name
    if (path / _STUDY_MARKER).is_file():
        return "study"
    return None


def check_output_path(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an ``out`` that is ``.``/``..``, lies under a file, or overlaps an input; returns it absolute.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_output_path(d / "data" / "idx", inputs=[d / "data"])
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: ...: field '--out': is inside the input ...; choose another folder
    """
    given = Path(out)
    if str(out) in ("", ".", "..") or given.name in ("", ".", ".."):
        raise InputError(f"{str(out)!r} is not a folder colmed can write; name a new folder",
                         field="--out")
    resolved = Path(os.path.abspath(given))
    cwd = Path.cwd().resolve()
    real = resolved.resolve()
    if real == cwd or real in cwd.parents:
        raise InputError("is the current folder or one of its parents; name a new folder", path=out,
                         field="--out")
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"lies under {parent}, which is a file, not a folder", path=out, field="--out")
            break
    if resolved.exists() and not resolved.is_dir():
        raise InputError("is a file, not a folder colmed wrote; choose another path", path=out, field="--out")
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = Path(item).resolve()
        if real == source:
            raise InputError(f"is the input {item}; choose another folder", path=out, field="--out")
        if source in real.parents:
            raise InputError(f"is inside the input {item}; choose another folder", path=out, field="--out")
        if real in source.parents:
            raise InputError(f"contains the input {item}; choose another folder", path=out, field="--out")
    return resolved


def _holder_pid(lock_file: Path) -> str:
    try:
        return lock_file.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def _write_pid(fd: int) -> None:
    # The holder's pid lives in the lock file itself, so a refused writer can name it.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _remove_crash_litter(out: Path) -> None:
    """Clean up after a killed writer of ``out`` (only called while holding its lock).

    Its ``.<name>.<pid>-xxxxxxxx.building`` folders are removed. A ``.<name>.old-<pid>`` is the previous
    finished output, moved aside just before the swap: if the kill came between the two renames ``out`` is
    missing, and the newest such folder is put back rather than deleted.
    """
    name = re.escape(out.name)
    building = re.compile(rf"^\.{name}\.(\d+-)?[a-z0-9_]{{8}}\.building$")
    previous = re.compile(rf"^\.{name}\.old-\d+$")
    olds = []
    for sibling in out.parent.iterdir():
        if building.match(sibling.name):
            _remove(sibling)
        elif previous.match(sibling.name):
            olds.append(sibling)
    if olds and not out.exists() and not out.is_symlink():
        newest = max(olds, key=lambda p: p.lstat().st_mtime)
        if newest.is_dir() and not newest.is_symlink():
            os.replace(newest, out)
            olds.remove(newest)
    for old in olds:
        _remove(old)


_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # atomic_write's mkstemp names


def remove_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove :func:`atomic_write` temp files a killed writer left in ``folder``; returns what was removed.

    Only for a folder whose writer lock the caller holds (no live writer can own them).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / ".state.json.ab12cd_9.tmp").write_text("{")
        >>> _ = (d / "notes.tmp").write_text("mine")
        >>> [p.name for p in remove_temp_files(d)], sorted(p.name for p in d.iterdir())
        (['.state.json.ab12cd_9.tmp'], ['notes.tmp'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"))
             if _TEMP_FILE.match(p.name) and p.is_file() and not p.is_symlink()]
    for p in found:
        with contextlib.suppress(OSError):
            p.unlink()
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the exclusive writer lock of ``out`` (``.<name>.lock`` beside it); a second writer fails at once.

    The lock is an OS lock (``filelock``), so it dies with its process: a killed writer never blocks the
    next run, which then removes the killed writer's temp folders. The lock file holds the writer's pid
    and is removed when the writer finishes.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "idx"
        >>> with output_lock(out):
        ...     with output_lock(out):
        ...         pass
        Traceback (most recent call last):
        ...
        colmed.core.errors.OutputBusyError: ...idx: another colmed process (pid ...) is writing here; wait for it or choose another --out
    """
    from filelock import FileLock, Timeout

    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(os.path.realpath(out.parent)) / out.name  # one lock whichever symlinked path names the parent
    lock_file = out.with_name(f".{out.name}.lock")
    lock = FileLock(str(lock_file), timeout=0, on_acquired=_write_pid)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusyError(f"{out}: another colmed process (pid {_holder_pid(lock_file)}) is writing here; "
                              "wait for it or choose another --out") from None
    try:
        _remove_crash_litter(out)
        yield out
    finally:
        # Unlinked while still held: filelock refuses a lock on an unlinked inode, so a writer that opened
        # this file a moment ago retries on a fresh one instead of sharing the output with the next writer.
        with contextlib.suppress(OSError):
            lock_file.unlink()
        lock.release()


@contextlib.contextmanager
def atomic_directory(out: str | Path, overwrite: bool = False, kind: str | None = None,
                     inputs: Iterable[str | Path | None] = (), locked: bool = False) -> Iterator[Path]:
    """Build a directory in a temp sibling and rename it to ``out`` on success.

    Refuses to touch an existing ``out`` unless ``overwrite``, and even then replaces it only when it is
    a colmed output of the same ``kind`` (a key of :data:`OUTPUT_KINDS`; ``None`` accepts any colmed
    kind) or an empty folder: a folder colmed did not write is never deleted. ``out`` must not be
    ``.``/``..``, lie under a file, or equal, contain or sit inside any of ``inputs``. One writer per
    ``out`` at a time (see :func:`output_lock`; ``locked``: the caller already holds it, e.g. for a
    whole resumable run). On failure nothing is left behind and an existing
    ``out`` is untouched; the new folder follows the user's umask.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "idx"
        >>> with atomic_directory(out) as tmp:
        ...     _ = (tmp / "a.txt").write_text("x")
        >>> sorted(p.name for p in out.iterdir())
        ['a.txt']
    """
    if kind is not None and kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(OUTPUT_KINDS)}")
    given = out
    out = check_output_path(out, inputs)
    _check_replaceable(out, given, overwrite, kind)  # before the lock file exists: a refusal writes nothing
    with contextlib.nullcontext(out) if locked else output_lock(out):
        _check_replaceable(out, given, overwrite, kind)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}-", suffix=".building", dir=out.parent))
        try:
            os.chmod(tmp, 0o777 & ~current_umask())
            yield tmp
            if out.exists():
                _check_replaceable(out, given, overwrite, kind)
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_output(out: str | Path, overwrite: bool = False, kind: str | None = None,
                 inputs: Iterable[str | Path | None] = ()) -> Path:
    """What :func:`atomic_directory` checks on entry, for a command to call before it loads anything heavy.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "notes.txt").write_text("mine")
        >>> check_output(d, overwrite=True, kind="index")
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: ...: field '--out': holds files colmed did not write ...
    """
    resolved = check_output_path(out, inputs)
    _check_replaceable(resolved, out, overwrite, kind)
    return resolved


def _check_replaceable(out: Path, given: str | Path, overwrite: bool, kind: str | None) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise IndexExistsError(f"{given}: already exists; pass --overwrite to replace it")
    if out.is_symlink() or not out.is_dir():
        raise InputError("is not a folder colmed wrote; --overwrite replaces only colmed outputs", path=given,
                         field="--out")
    if not any(out.iterdir()):
        return
    found = output_kind(out)
    if found is None:
        raise InputError("holds files colmed did not write (no colmed manifest.json); --overwrite replaces "
                         "only colmed outputs, so move it or choose another --out", path=given, field="--out")
    if kind is not None and found != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise InputError(f"holds a colmed {found} output and this writes {article} {kind}; --overwrite replaces "
                         "only an output of the same kind", path=given, field="--out")


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def looks_like_path(model: str) -> bool:
    """True when ``model`` can only be a local path: it could not be a hub id (``name`` or ``org/name``),
    or its first part exists on disk (``models/minilm`` while ``models/`` is here).

    Example:
        >>> looks_like_path("BAAI/bge-small-en-v1.5"), looks_like_path("./models/minilm"), looks_like_path("a/b/c")
        (False, True, True)
    """
    text = str(model)
    if not _HUB_ID.match(text) or ".." in text.split("/"):
        return True
    head = text.split("/")[0]
    return "/" in text and Path(head).exists()


def resolve_model_arg(model: str, field: str = "model", path: str | Path | None = None) -> str:
    """A local model as an absolute path, a hub id unchanged; a path that does not exist is refused.

    A model argument that looks like a path is never sent to the hub (where a repo of that name might
    hold some other model). ``path`` names the file the argument came from, for the error.

    Example:
        >>> resolve_model_arg("sentence-transformers/all-MiniLM-L6-v2")
        'sentence-transformers/all-MiniLM-L6-v2'
        >>> resolve_model_arg("./no/such/model")
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: field 'model': ./no/such/model: no such local model folder (a path, so not looked up on the hub)
    """
    text = str(model)
    local = Path(text).expanduser()
    if local.exists():
        return str(local.resolve())
    if looks_like_path(text):
        raise InputError(f"{text}: no such local model folder (a path, so not looked up on the hub)", path=path,
                         field=field)
    return text


def read_yaml_mapping(path: str | Path) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
        >>> _ = p.write_text("lr: 2.0e-5\\nepochs: 1\\n")
        >>> read_yaml_mapping(p)
        {'lr': 2e-05, 'epochs': 1}
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(f"malformed YAML ({getattr(e, 'problem', e)})", path=path,
                         line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping of setting: value", path=path)
    return data
