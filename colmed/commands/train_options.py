"""Flag helpers the two ``colmed train`` commands share: hidden old flag spellings, mapped to today's names.

Example:
    >>> resolve_old_spellings({"batch_size": None, "old_bsize": 8, "seed": None}, {"bsize": "batch_size"})
    {'batch_size': 8}
"""

from __future__ import annotations

from typing import Any

import click

from colmed.core.errors import InputError


def old_spelling(flag: str, type_: type):
    """A hidden option for an earlier spelling of a flag; its value lands in ``old_<name>``."""
    name = flag.lstrip("-").replace("-", "_")
    return click.option(flag, f"old_{name}", type=type_, default=None, hidden=True)


def resolve_old_spellings(flags: dict[str, Any], old_to_new: dict[str, str]) -> dict[str, Any]:
    """The flags that were given (``None`` = not given), each old spelling folded into its new name."""
    flags = dict(flags)
    for old, new in old_to_new.items():
        value = flags.pop(f"old_{old}", None)
        if value is None:
            continue
        if flags.get(new) is not None and flags[new] != value:
            raise InputError(f"--{old.replace('_', '-')} {value} contradicts --{new.replace('_', '-')} {flags[new]}; "
                             f"give one", field=new)
        flags[new] = value
    return {k: v for k, v in flags.items() if v is not None}
