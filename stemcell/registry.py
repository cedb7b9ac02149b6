"""A named registry (torchvision style): register with a decorator, look up by name, list the names.

Built-in entries register themselves when their module is imported; `builtin` imports those
modules on first use, so a registry is complete whenever it is read.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, builtin: Callable[[], None]) -> None:
        self._what = what  # what an entry is, for messages ("base model", "data kind")
        self._builtin = builtin
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated object the entry `name` (names are unique)."""

        def wrap(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self._what} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return wrap

    def names(self) -> list[str]:
        self._builtin()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._builtin()
        if name not in self._entries:
            raise ValueError(f"unknown {self._what} {name!r}; choose one of {sorted(self._entries)}")
        return self._entries[name]
