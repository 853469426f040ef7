"""Content-addressed, resumable pipeline stages: the engine under ``colmed study``.

A :class:`Stage` is one colmed command (run as its own process) plus the stages and files it reads.
Its key hashes the command, the keys of the stages it depends on, and the content of its input
files, so changing a late setting re-runs only the stages downstream of it. A stage counts as done
only when its ``stage.json`` marker (written atomically after the command exits 0) carries the same
key, so ``kill -9`` at any point loses nothing already finished and never passes off half-written
output as done.

Example:
    >>> import tempfile, pathlib, sys
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> s = Stage("hello", [sys.executable, "-c", "print('hi')"], root / "hello")
    >>> runner = StageRunner([s])
    >>> [status for _, status in runner.plan()]
    ['to run']
    >>> runner.run(echo=lambda m: None)["hello"]["status"]
    'ran'
    >>> [status for _, status in runner.plan()]
    ['cached']
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmed.core.errors import ColmedError
from colmed.core.io import write_json
from colmed.core.provenance import hash_path

CODE_VERSION = "1"  # bump when a stage's semantics change without its command changing


@dataclass
class Stage:
    """One step: ``command`` writes its results under ``out_dir``.

    ``inputs`` are files or folders whose content feeds the key; ``after`` names stages this one reads.
    ``clean_on_change``: delete ``out_dir`` before re-running under a new key (else the command's own
    resume/caching logic decides what to reuse).
    """

    name: str
    command: list[str]
    out_dir: Path
    after: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    clean_on_change: bool = True
    settings: Any = None  # the typed settings ``command`` was built from (not part of the key: the command is)


class StageRunner:
    """Runs stages in order, skipping those whose marker carries the current key."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages
        self.by_name = {s.name: s for s in stages}
        self._keys: dict[str, str] = {}

    def key(self, stage: Stage) -> str:
        if stage.name not in self._keys:
            payload = {"command": stage.command, "code": CODE_VERSION,
                       "after": {a: self.key(self.by_name[a]) for a in stage.after},
                       "inputs": {str(p): hash_path(p) or "absent" for p in stage.inputs}}
            self._keys[stage.name] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return self._keys[stage.name]

    @staticmethod
    def marker(stage: Stage) -> Path:
        # Beside, not inside, the output: commands may refuse or clean a non-empty output folder.
        out = Path(stage.out_dir)
        return out.with_name(out.name + ".stage.json")

    def is_done(self, stage: Stage) -> bool:
        m = self.marker(stage)
        if not m.is_file():
            return False
        try:
            return json.loads(m.read_text()).get("key") == self.key(stage)
        except json.JSONDecodeError:
            return False

    def plan(self) -> list[tuple[Stage, str]]:
        return [(s, "cached" if self.is_done(s) else "to run") for s in self.stages]

    def run(self, echo=print, log_dir: Path | None = None) -> dict[str, dict]:
        summary: dict[str, dict] = {}
        for stage in self.stages:
            key = self.key(stage)
            if self.is_done(stage):
                info = json.loads(self.marker(stage).read_text())
                summary[stage.name] = {"status": "cached", "seconds": info.get("seconds"), "key": key}
                echo(f"[{stage.name}] cached ({key})")
                continue
            out = Path(stage.out_dir)
            started = self.marker(stage).with_suffix(".started")
            previous = None
            for m in (self.marker(stage), started):  # finished, or killed mid-run, under some key
                if m.is_file():
                    try:
                        previous = previous or json.loads(m.read_text()).get("key")
                    except json.JSONDecodeError:
                        previous = "unreadable"
            if previous is not None and previous != key and stage.clean_on_change and out.exists():
                shutil.rmtree(out)  # output of other inputs: stale (a same-key partial output is resumed)
            self.marker(stage).unlink(missing_ok=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(started, {"key": key})
            echo(f"[{stage.name}] running: {' '.join(map(str, stage.command))}")
            t0 = time.perf_counter()
            log = (log_dir or out.parent) / f"{stage.name}.log"
            with open(log, "a", encoding="utf-8") as logf:
                proc = subprocess.run(list(map(str, stage.command)), stdout=logf, stderr=subprocess.STDOUT)
            seconds = round(time.perf_counter() - t0, 1)
            if proc.returncode:
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
                raise ColmedError(f"stage {stage.name!r} failed (exit {proc.returncode}; log {log}): {tail[0][:300]}")
            write_json(self.marker(stage), {"key": key, "seconds": seconds, "command": list(map(str, stage.command)),
                                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            started.unlink(missing_ok=True)
            summary[stage.name] = {"status": "ran", "seconds": seconds, "key": key}
            echo(f"[{stage.name}] done in {seconds:.0f} s")
        return summary


def colmed_command(*args: str) -> list[str]:
    """A colmed CLI invocation in a fresh process with this interpreter."""
    return [sys.executable, "-m", "colmed.cli", *map(str, args)]
