"""Records that cross a process boundary: dataclasses as plain JSON values, read back strictly.

What the supervisor and its children tell each other (events, commands, specs) is declared as
dataclasses. `to_json` turns one into values `json.dumps` takes; `from_json` reads them back
against the class's annotations: every field without a default present, no unknown key, each
value of its declared type (an int where a float is declared is kept as it is, so a document
read and written again is unchanged). A mismatch raises ValueError naming the field, e.g.
`RunSummary.held.total_s='x': expected a number`, so two processes that disagree say where.

A record whose JSON form is not its fields (a flat map) defines its own `to_json`/`from_json`;
both are used wherever the record appears. A union reads as its first member that reads the
value: a map, as the first record whose fields its keys are (every one without a default
present, no other), so records of one union must differ in their fields.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """`value` as JSON-able values: records as maps of their fields, enums as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_json() if hasattr(value, "to_json") else fields_to_json(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def fields_to_json(record: Any) -> dict[str, Any]:
    """The map of `record`'s fields (what a record's own `to_json` may build on)."""
    return {f.name: to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}


def from_json(cls: type[T], data: Any) -> T:
    """Record `cls` from the map of its fields (a record's own `from_json` may build on it);
    raises ValueError naming what is wrong."""
    return _record(data, cls, cls.__name__)


def _read(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _read(value, members[0], where)
        for member in members:  # the first that reads it
            try:
                return _read(value, member, where)
            except ValueError:
                continue
        names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise ValueError(f"{where}={value!r}: none of {names}")
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if hasattr(annotation, "from_json"):
            try:
                return annotation.from_json(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return _record(value, annotation, where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = [m.value for m in annotation]
            raise ValueError(f"{where}={value!r}: expected one of {choices}") from None
    if origin in (list, tuple):
        _expect(isinstance(value, list), where, value, "a list")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            _expect(len(value) == len(args), where, value, f"{len(args)} items")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_read(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
        items = [_read(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        keyed = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        _expect(keyed, where, value, "a map with string keys")
        return {k: _read(v, args[1], f"{where}.{k}") for k, v in value.items()}
    return _scalar(value, annotation, where)


def _record(value: Any, cls: type, where: str) -> Any:
    _expect(isinstance(value, dict), where, value, f"a map of {cls.__name__}'s fields")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: not a field of {cls.__name__} ({sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _read(value[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}.{name}: missing")
    return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The fields' annotations, resolved once per class (beats are read 4 times a second)."""
    return typing.get_type_hints(cls)


def _scalar(value: Any, annotation: Any, where: str) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is float:
        _expect(number, where, value, "a number")
    elif annotation is int:
        _expect(number and isinstance(value, int), where, value, "an integer")
    elif annotation in (str, bool):
        _expect(isinstance(value, annotation), where, value, annotation.__name__)
    elif annotation is type(None):
        _expect(value is None, where, value, "null")
    else:  # a declaration this module cannot check: the record's author must say how
        raise TypeError(f"{where}: records cannot read values of type {annotation!r}")
    return value


def _expect(ok: bool, where: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{where}={value!r}: expected {expected}")
