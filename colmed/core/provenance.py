"""Run manifests: what produced an output (config, package versions, git sha, input hashes).

Example:
    >>> m = run_manifest({"lr": 2e-5})
    >>> sorted(m)[:3]
    ['config', 'created', 'git_sha']
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

from colmed.core.io import sha256_file


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


def run_manifest(config: dict[str, Any], inputs: Iterable[str | Path] = (), **extra: Any) -> dict[str, Any]:
    """A manifest dict: config, package versions, git sha, sha256 of each input file, creation time."""
    return {"config": config, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": git_sha(), "inputs": {str(p): sha256_file(p) for p in inputs if Path(p).is_file()},
            "versions": package_versions(), **extra}
