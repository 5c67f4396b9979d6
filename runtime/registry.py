"""Type-string registries with lazy imports: `--robot.type=sim` names a class, not an if/elif."""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from asyncinf.runtime.errors import ConfigError

T = TypeVar("T")


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Maps a type string to "module:Class"; the module is imported only when asked for."""

    def __init__(self, kind: str, entries: dict[str, str], fallback: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, str | type[T]] = dict(entries)
        # "module:function", imported (like the entries) only when a name is not registered:
        # the function returns the class, or raises an error that says why not.
        self._fallback = fallback

    def register(self, name: str, target: str | type[T]) -> None:
        """Add a custom type (a class, or "module:Class" to import lazily)."""
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def load(self, name: str) -> type[T]:
        try:
            target = self._entries[name]
        except KeyError:
            if self._fallback is not None:
                return _import(self._fallback)(name)
            raise ConfigError(
                f"--{self.kind}.type={name!r} is not known; choose one of {self.names()}"
            ) from None
        return _import(target) if isinstance(target, str) else target
