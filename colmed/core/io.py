"""Small, dependency-free I/O helpers used by every colmed package.

Outputs are written atomically (temp file in the same directory, fsync, rename) so a crash never
leaves a half-written file where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from colmed.core.errors import IndexExistsError, InputError


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


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line, 1-based.

    Raises :class:`InputError` naming the file and line for a missing file, bad UTF-8, bad JSON,
    a line that is not an object, or a missing/empty required field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"not valid UTF-8 ({e.reason})", path=path, line=lineno) from None
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


@contextlib.contextmanager
def atomic_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temp sibling and rename it to ``out`` on success.

    Refuses to touch an existing ``out`` unless ``overwrite``; on failure nothing is left behind and
    an existing ``out`` is untouched. With ``overwrite`` the old directory is replaced only after the
    new one is complete.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "idx"
        >>> with atomic_directory(out) as tmp:
        ...     _ = (tmp / "a.txt").write_text("x")
        >>> sorted(p.name for p in out.iterdir())
        ['a.txt']
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise IndexExistsError(f"{out}: already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
