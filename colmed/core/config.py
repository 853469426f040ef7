"""Dataclass configs from YAML: one loader, checked field by field against the dataclass's types.

:func:`from_yaml` reads a YAML mapping, applies ``KEY=VALUE`` overrides (dotted keys reach nested
dataclasses and dict fields; values are read as YAML scalars, so ``max_steps=100`` is an int and
``dev=null`` is ``None``) and builds the dataclass, refusing unknown keys and values of the wrong type
with one line naming the file and the field. Supported field types: ``int``, ``float`` (an int is
accepted and widened), ``bool`` (only ``true``/``false``: a quoted ``"no"`` is refused), ``str``,
``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[K, V]``, ``Literal[...]``, ``Any`` and nested
dataclasses.

Example:
    >>> import tempfile, pathlib
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Cfg:
    ...     num_negatives: int = 1
    ...     learning_rate: float = 2e-5
    ...     dedup: bool = True
    ...     dev: str | None = "triplets"
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
    >>> _ = path.write_text("num_negatives: 4\\nlearning_rate: 1e-5\\n")
    >>> from_yaml(Cfg, path, overrides=["dedup=false", "dev=null"])
    Cfg(num_negatives=4, learning_rate=1e-05, dedup=False, dev=None)
    >>> _ = path.write_text("num_negatives: five\\n")
    >>> from_yaml(Cfg, path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colmed.core.errors.InputError: .../c.yaml: field 'num_negatives': expected an integer, got 'five'
    >>> from_dict(Cfg, {"dedup": "no"}, path="c.yaml")
    Traceback (most recent call last):
    ...
    colmed.core.errors.InputError: c.yaml: field 'dedup': expected true or false, got 'no'
    >>> from_dict(Cfg, {"epochz": 1}, path="c.yaml")
    Traceback (most recent call last):
    ...
    colmed.core.errors.InputError: c.yaml: field 'epochz': unknown setting; known: dedup, dev, learning_rate, num_negatives
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from colmed.core.errors import InputError

T = TypeVar("T")

# YAML 1.1 (PyYAML) reads "1e-5" (no dot) as a string; YAML 1.2 and every user read it as a number.
_FLOAT_LITERAL = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

Overrides = Iterable[str] | Mapping[str, Any]


def from_yaml(cls: type[T], path: str | Path, overrides: Overrides = ()) -> T:
    """Build dataclass ``cls`` from the YAML mapping at ``path`` with ``overrides`` applied on top.

    ``overrides`` is a list of ``"key=value"`` strings (dotted keys for nested settings) or a mapping of
    key to an already-typed value (e.g. the CLI flags that were given).
    """
    from colmed.core.io import read_yaml_mapping

    values = apply_overrides(read_yaml_mapping(path), overrides)
    return from_dict(cls, values, path=path)


def from_dict(cls: type[T], values: Mapping[str, Any], path: str | Path | None = None, _prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``values``, checking every key and every value's type.

    Fields a nested mapping leaves out keep the parent's default for that section (not the nested
    class's bare defaults), so ``{"colbert": {"enabled": False}}`` keeps the default ``colbert.args``.
    A class may define ``config_defaults(values) -> dict`` (e.g. the fields of a preset ``values`` names);
    those fill in what ``values`` leaves out.
    """
    if not isinstance(values, Mapping):
        raise InputError(f"expected a mapping, got {_show(values)}", path=path, field=_prefix.rstrip(".") or None)
    if hasattr(cls, "config_defaults"):
        # Defaults the values themselves imply (a named preset); explicit values still win.
        values = {**cls.config_defaults(values), **values}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = _prefix + str(key)
        if key not in fields:
            raise InputError(f"unknown setting; known: {', '.join(sorted(fields))}", path=path, field=name)
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype) and isinstance(value, Mapping):
            default = _default_of(fields[key])
            merged = {**(to_dict(default) if default is not None else {}), **value}
            kwargs[key] = from_dict(ftype, merged, path=path, _prefix=name + ".")
        else:
            kwargs[key] = coerce(value, ftype, field=name, path=path)
    try:
        return cls(**kwargs)
    except InputError as e:
        # A range check in __post_init__ knows the field but not the file it came from.
        if path is None or e.path is not None:
            raise
        message = str(e).removeprefix(f"field {e.field!r}: " if e.field else "")
        raise InputError(message, path=path, line=e.line,
                         field=_prefix + e.field if e.field else None) from None


def check_types(obj: Any, path: str | Path | None = None) -> None:
    """Check (and widen int -> float) every field of dataclass instance ``obj`` in place.

    For configs built directly in Python: call it from ``__post_init__`` so a wrong type fails there too.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_types(value, path)
        else:
            object.__setattr__(obj, f.name, coerce(value, hints[f.name], field=f.name, path=path))


def coerce(value: Any, ftype: Any, field: str, path: str | Path | None = None) -> Any:
    """``value`` checked against type ``ftype``; returns it (ints widened to float where a float is asked)."""
    ok, result, expected = _coerce(value, ftype)
    if not ok:
        raise InputError(f"expected {expected}, got {_show(value)}", path=path, field=field)
    return result


def apply_overrides(values: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A copy of ``values`` with overrides applied; ``"a.b=1"`` sets ``values["a"]["b"] = 1``.

    >>> apply_overrides({"data": {"num_notes": 5}}, ["data.num_notes=50", "seed=7", "lr=1e-4"])
    {'data': {'num_notes': 50}, 'seed': 7, 'lr': 0.0001}
    """
    out = _deep_copy(values)
    items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
    for key, value in items:
        node = out
        parts = str(key).split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"{'.'.join(parts[:i + 1])} is a value, not a section", field=str(key))
            node = child
        node[parts[-1]] = value
    return out


def parse_scalar(raw: str) -> Any:
    """A command-line value read as YAML (``5`` -> 5, ``null`` -> None, ``[1, 2]`` -> list), plus ``1e-4``.

    >>> parse_scalar("5"), parse_scalar("1e-4"), parse_scalar("null"), parse_scalar("runs/x")
    (5, 0.0001, None, 'runs/x')
    """
    import yaml

    if raw == "":
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
        return float(value)
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-ready values (nested dataclasses become mappings, tuples lists)."""
    return _plain(dataclasses.asdict(obj))


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


# ------------------------------------------------------------------------------------------------ internals


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, raw = str(item).partition("=")
    if not sep or not key.strip():
        raise InputError(f"override {item!r} is not KEY=VALUE", field="--set")
    return key.strip(), parse_scalar(raw)


def _coerce(value: Any, ftype: Any) -> tuple[bool, Any, str]:
    if ftype is Any or ftype is object:
        return True, value, "anything"
    origin = typing.get_origin(ftype)
    args = typing.get_args(ftype)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return (type(None) in args), None, _describe(ftype)
        for arg in args:
            if arg is type(None):
                continue
            ok, result, _ = _coerce(value, arg)
            if ok:
                return True, result, ""
        return False, value, _describe(ftype)
    if origin is typing.Literal:
        return value in args, value, _describe(ftype)
    if origin in (list, tuple, set, frozenset) or ftype in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value, _describe(ftype)
        item_type = args[0] if args else Any
        items = []
        for item in value:
            ok, result, _ = _coerce(item, item_type)
            if not ok:
                return False, value, _describe(ftype)
            items.append(result)
        return True, (tuple(items) if origin is tuple else items), ""
    if origin is dict or ftype is dict:
        if not isinstance(value, Mapping):
            return False, value, "a mapping"
        return True, dict(value), ""
    if dataclasses.is_dataclass(ftype):
        if isinstance(value, ftype):
            return True, value, ""
        if isinstance(value, Mapping):
            return True, from_dict(ftype, value), ""
        return False, value, "a mapping"
    if ftype is bool:
        return isinstance(value, bool), value, "true or false"
    if ftype is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if ftype is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value), ""
        if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
            return True, float(value), ""
        return False, value, "a number"
    if ftype is str:
        return isinstance(value, str), value, "a string"
    if isinstance(ftype, type):
        return isinstance(value, ftype), value, f"a {ftype.__name__}"
    return True, value, ""


def _describe(ftype: Any) -> str:
    origin = typing.get_origin(ftype)
    args = typing.get_args(ftype)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, set, frozenset) or ftype in (list, tuple):
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        ftype, "a mapping" if origin is dict or dataclasses.is_dataclass(ftype) else getattr(ftype, "__name__", str(ftype)))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _deep_copy(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
