"""Content-addressed, resumable pipeline stages: the engine under ``colmed study``.

A :class:`Stage` is one colmed command (run as its own process) plus the stages and files it reads.
Its key hashes the command, the keys of the stages it depends on, and the content of its input
files, so changing a late setting re-runs only the stages downstream of it. A stage counts as done
only when its ``stage.json`` marker (written atomically after the command exits 0) carries the same
key, so ``kill -9`` at any point loses nothing already finished and never passes off half-written
output as done.

Each stage runs in its own process group and dies with the runner: the group is stopped when the runner
exits or is signalled, and a guard process leading the group stops it (the stage's own children included)
when the runner is killed outright. A stage whose command finished but whose marker was never written (the
runner died in between) is adopted when its output is a finished colmed output of the expected kind,
written under the current key (for a stage that keeps its output across key changes: not the output that
was there when the current key's run started).

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

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmed.core.errors import ColmedError, InputError
from colmed.core.io import output_kind, write_json
from colmed.core.provenance import hash_path

CODE_VERSION = "1"  # bump when a stage's semantics change without its command changing


@dataclass
class Stage:
    """One step: ``command`` writes its results under ``out_dir``.

    ``inputs`` are files or folders whose content feeds the key; ``after`` names stages this one reads.
    ``clean_on_change``: delete ``out_dir`` before re-running under a new key (else the command's own
    resume/caching logic decides what to reuse, e.g. ``colmed generate --overwrite`` keeps the generated
    queries of its previous output when only later settings changed).
    """

    name: str
    command: list[str]
    out_dir: Path
    after: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    clean_on_change: bool = True
    settings: Any = None  # the typed settings ``command`` was built from (not part of the key: the command is)
    # The command's finished output and its colmed kind (colmed.core.io.OUTPUT_KINDS): lets a re-run adopt
    # an output whose marker a crash prevented.
    output: Path | None = None
    output_kind: str | None = None


class StageRunner:
    """Runs stages in order, skipping those whose marker carries the current key."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages
        self.by_name = {s.name: s for s in stages}
        self._keys: dict[str, str] = {}

    def key(self, stage: Stage, interpreter: str | None = None) -> str:
        """``stage``'s key; with ``interpreter``, the key it had when run by that path to this Python
        (the commands name the interpreter they were built with, ``sys.executable``)."""
        if (stage.name, interpreter) not in self._keys:
            command = list(stage.command)
            if interpreter is not None and command and command[0] == sys.executable:
                command[0] = interpreter
            payload = {"command": command, "code": CODE_VERSION,
                       "after": {a: self.key(self.by_name[a], interpreter) for a in stage.after},
                       "inputs": {str(p): hash_path(p) or "absent" for p in stage.inputs}}
            self._keys[stage.name, interpreter] = \
                hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return self._keys[stage.name, interpreter]

    def _is_current(self, stage: Stage, recorded: dict) -> bool:
        """Whether a marker's ``recorded`` key is ``stage``'s current key, also when the marker was written by
        another path to the same interpreter (``bin/python`` and ``bin/python3.11``, an entry-point script
        reinstalled with another shebang): a different name for the same binary must not re-run hours of
        generation and training."""
        if recorded.get("key") == self.key(stage):
            return True
        interpreter = (recorded.get("command") or [None])[0]
        if not isinstance(interpreter, str) or interpreter == sys.executable:
            return False
        if not os.path.exists(interpreter) or os.path.realpath(interpreter) != os.path.realpath(sys.executable):
            return False
        return recorded.get("key") == self.key(stage, interpreter)

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
            return self._is_current(stage, json.loads(m.read_text()))
        except json.JSONDecodeError:
            return False

    def plan(self) -> list[tuple[Stage, str]]:
        return [(s, "cached" if self.is_done(s) else "to run") for s in self.stages]

    def stages_until(self, until: str | None) -> list[Stage]:
        """The stages up to and including ``until`` (all of them for ``None``); an unknown name is refused."""
        if until is None:
            return list(self.stages)
        names = [s.name for s in self.stages]
        if until not in names:
            raise InputError(f"unknown stage {until!r}; the stages are {', '.join(names)}", field="until")
        return self.stages[:names.index(until) + 1]

    def run(self, echo=print, log_dir: Path | None = None, until: str | None = None) -> dict[str, dict]:
        """Run every stage not already done under its key, in order; with ``until``, stop after that stage."""
        summary: dict[str, dict] = {}
        for stage in self.stages_until(until):
            key = self.key(stage)
            if self.is_done(stage):
                info = json.loads(self.marker(stage).read_text())
                summary[stage.name] = {"status": "cached", "seconds": info.get("seconds"), "key": key}
                echo(f"[{stage.name}] cached ({key})")
                continue
            out = Path(stage.out_dir)
            started = self.marker(stage).with_suffix(".started")
            previous, last_start = None, {}
            for m in (self.marker(stage), started):  # finished, or killed mid-run, under some key
                if m.is_file():
                    try:
                        info = json.loads(m.read_text())
                    except json.JSONDecodeError:
                        info = {"key": "unreadable"}
                    previous = previous or info
                    if m == started:
                        last_start = info
            same_key = previous is not None and self._is_current(stage, previous)
            if previous is not None and not same_key and stage.clean_on_change and out.exists():
                shutil.rmtree(out)  # output of other inputs: stale (a same-key partial output is resumed)
            self.marker(stage).unlink(missing_ok=True)
            if same_key and self._adoptable(stage, last_start):
                write_json(self.marker(stage), {"key": key, "seconds": None, "command": list(map(str, stage.command)),
                                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "adopted": True})
                started.unlink(missing_ok=True)
                summary[stage.name] = {"status": "adopted", "seconds": None, "key": key}
                echo(f"[{stage.name}] adopted: {stage.output} finished before the last run was stopped ({key})")
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(started, {"key": key, "command": list(map(str, stage.command)),
                                 "output_before": self._output_stamp(stage)})
            echo(f"[{stage.name}] running: {' '.join(map(str, stage.command))}")
            t0 = time.perf_counter()
            log = (log_dir or out.parent) / f"{stage.name}.log"
            with open(log, "a", encoding="utf-8") as logf:
                returncode = run_tied(list(map(str, stage.command)), stdout=logf)
            seconds = round(time.perf_counter() - t0, 1)
            if returncode:
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
                raise ColmedError(f"stage {stage.name!r} failed (exit {returncode}; log {log}): {tail[0][:300]}")
            write_json(self.marker(stage), {"key": key, "seconds": seconds, "command": list(map(str, stage.command)),
                                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            started.unlink(missing_ok=True)
            summary[stage.name] = {"status": "ran", "seconds": seconds, "key": key}
            echo(f"[{stage.name}] done in {seconds:.0f} s")
        return summary


    def _adoptable(self, stage: Stage, last_start: dict) -> bool:
        """Whether ``stage``'s output is a finished colmed output of its kind written under the current key.

        The caller checked that the last run started under the current key (``last_start``: its ``.started``
        marker). For a clean_on_change stage nothing of another key survives a key change; otherwise the output
        may still be an earlier key's (the run was stopped before replacing it), so it must not be the output
        that was there when that run started.
        """
        if stage.output is None or stage.output_kind is None or output_kind(stage.output) != stage.output_kind:
            return False
        return stage.clean_on_change or self._output_stamp(stage) != last_start.get("output_before")

    @staticmethod
    def _output_stamp(stage: Stage) -> list[int] | None:
        """Tells one finished output from another: its manifest's inode and modification time (every colmed
        output writes a new manifest file), None when there is none."""
        try:
            st = (Path(stage.output) / "manifest.json").stat() if stage.output else None
        except OSError:
            return None
        return [st.st_ino, st.st_mtime_ns] if st else None


def _guard(poll: float = 0.5) -> None:
    """``python -c 'from colmed.stages import _guard; _guard()' RUNNER_PID GRACE COMMAND...``: the stage's group
    leader. Runs COMMAND in its own process group and exits as it does; if the runner dies, however it died
    (``kill -9`` included), stops the whole group: the command and every process it started.

    A parent-death signal alone reaches only the process it is set on; the command's own children (data-loader
    or inference workers) would outlive it.
    """
    runner, grace, command = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    # A handler, not SIG_IGN: an ignored signal stays ignored across exec, a handled one is reset. The group's
    # SIGTERM (from the runner's _stop_group) reaches the command directly; the guard waits for it to exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    proc = subprocess.Popen(command)
    while True:
        try:
            returncode = proc.wait(timeout=poll)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != runner:  # reparented: the runner is gone
                for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
                    os.killpg(0, sig)  # SIGKILL ends the guard too
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=wait)
    if returncode < 0:  # killed by a signal: die of the same one, so the runner sees what the command got
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's disposition cannot be set (nor need be)
            signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    sys.exit(returncode)


def run_tied(command: list[str], stdout=None, grace: float = 10.0) -> int:
    """Run ``command`` in its own process group, tied to this process; returns its exit code.

    If this process exits, raises (``KeyboardInterrupt``, ``SystemExit`` from SIGTERM) or is SIGKILLed, the
    command and everything in its group, its own children included, are stopped (SIGTERM, then SIGKILL after
    ``grace`` seconds), so no orphan keeps writing into a study a re-run is about to resume. A small guard
    process (:func:`_guard`) leads the group and watches this one.

    Example:
        >>> import sys
        >>> run_tied([sys.executable, "-c", "raise SystemExit(3)"])
        3
    """
    guard = [sys.executable, "-c", "from colmed.stages import _guard; _guard()", str(os.getpid()), str(grace)]
    proc = subprocess.Popen([*guard, *command], stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not None else None, start_new_session=True)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            _stop_group(proc, grace)


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            break
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (children that outlived the leader)


def colmed_command(*args: str) -> list[str]:
    """A colmed CLI invocation in a fresh process with this interpreter."""
    return [sys.executable, "-m", "colmed.cli", *map(str, args)]
