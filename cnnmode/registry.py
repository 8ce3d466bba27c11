"""A small generic registry: many things of one kind, looked up by name."""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from cnnmode.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders; `get` errors list the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator that adds `obj` under `name`; a duplicate name is a programming error."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()[0:1]
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return add

    def get(self, name: str) -> T:
        """Return the entry called `name`, or raise a UsageError listing the valid names."""
        if name not in self._items:
            raise UsageError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def describe(self, name: str) -> str:
        """One-line description of an entry."""
        return self._help.get(name, "")

    def __contains__(self, name: str) -> bool:
        return name in self._items


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A package face's `__getattr__` (PEP 562) for `homes` (exported name → submodule of `package`): each module
    is imported when one of its names is first used, so that light parts of a package (the options dataclasses
    the command line builds its flags from) load without the heavy ones (torch, OpenCV)."""
    def find(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
    return find
