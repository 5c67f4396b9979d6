"""Type-string registries with lazy imports: `--robot.type=sim` names a class, not an if/elif."""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from asyncinf.runtime.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a type string to "module:Class"; the module is imported only when asked for."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries: dict[str, str | type[T]] = dict(entries)

    def register(self, name: str, target: str | type[T]) -> None:
        """Add a custom type (a class, or "module:Class" to import lazily)."""
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def load(self, name: str) -> type[T]:
        try:
            target = self._entries[name]
        except KeyError:
            raise ConfigError(
                f"--{self.kind}.type={name!r} is not known; choose one of {self.names()}"
            ) from None
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
        return target
