"""Provenance: what produced an output (config, package versions, git sha, content hashes).

The one place for each: :func:`git_sha`, :func:`package_versions`, :func:`sha256_file`,
:func:`hash_directory` (a folder's content) and :func:`run_manifest` (the manifest every output writes).

Example:
    >>> m = run_manifest({"lr": 2e-5})
    >>> sorted(m)[:3]
    ['config', 'created', 'git_sha']
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

from colmed.core.io import sha256_file

__all__ = ["git_sha", "hash_directory", "hash_path", "package_versions", "run_manifest", "sha256_file"]


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The commit of the colmed checkout (``None`` outside git), with ``-dirty`` for local changes."""
    root = Path(cwd) if cwd else Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the packages that decide an index's or run's numbers."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("colmed", "torch", "transformers", "sentence-transformers", "faiss-cpu", "faiss-gpu",
                "bm25s", "ranx", "colbert-ai", *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def hash_directory(path: str | Path) -> str:
    """Hex sha256 of a folder's content: every file's path relative to ``path`` and its bytes.

    Names and bytes only (no timestamps), so a copy hashes the same and any edit, addition, removal or
    rename changes the hash. Recomputed on every call: nothing is cached, so a retrain is always seen.

    Example:
        >>> import tempfile, pathlib
        >>> a, b = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
        >>> for d in (a, b):
        ...     (d / "sub").mkdir(); _ = (d / "sub" / "w.txt").write_text("weights")
        >>> hash_directory(a) == hash_directory(b)
        True
        >>> _ = (b / "sub" / "w.txt").write_text("retrained")
        >>> hash_directory(a) == hash_directory(b)
        False
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(str(root))
    h = hashlib.sha256()
    # Same scheme as the study's stage keys always used, so finished stages stay cached.
    for f in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).parts):
        h.update(f.relative_to(root).as_posix().encode("utf-8"))
        h.update(sha256_file(f).encode("ascii"))
    return h.hexdigest()


def hash_path(path: str | Path) -> str | None:
    """:func:`sha256_file` of a file, :func:`hash_directory` of a folder, ``None`` when nothing is there."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        return hash_directory(p)
    return None


def run_manifest(config: dict[str, Any], inputs: Iterable[str | Path] = (), packages: tuple[str, ...] = (),
                 **extra: Any) -> dict[str, Any]:
    """A manifest dict: config, package versions (plus ``packages``), git sha, content hash of each input
    (a file's sha256 or :func:`hash_directory` of a folder; absent inputs are left out), creation time,
    and any ``extra`` keys the output kind adds."""
    return {"config": config, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": git_sha(), "inputs": {str(p): h for p in inputs if (h := hash_path(p)) is not None},
            "versions": package_versions(tuple(packages)), **extra}
