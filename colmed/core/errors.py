"""Errors colmed raises for bad input.

Every error carries one line that names the file, line and field at fault, so the CLI can print it
as-is and exit non-zero (see ``colmed.cli``).
"""

from __future__ import annotations

from pathlib import Path


class ColmedError(Exception):
    """A user-facing error: its ``str`` is a complete one-line explanation."""


class InputError(ColmedError):
    """Bad input data: a missing file, a malformed line, an unknown id.

    Example:
        >>> print(InputError("bad JSON", path="q.jsonl", line=3, field="text"))
        q.jsonl:3: field 'text': bad JSON
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "") + ": "
        if field is not None:
            where += f"field {field!r}: "
        super().__init__(f"{where}{message}")


class IndexExistsError(ColmedError):
    """An index directory exists and ``overwrite`` was not requested."""


class OutputBusyError(ColmedError):
    """Another process holds the writer lock of the output folder."""


class ProtocolMismatchError(ColmedError):
    """Runs produced under different evaluation protocols were asked to be compared."""
