"""Registries: what grows (tasks, pruning criteria, cell kinds, executors) is looked up by name.

Each registry belongs to a package, and every module of that package is imported the first
time the registry is read, so adding an entry is adding one file that registers itself::

    # polyticket/tasks/pos.py
    from polyticket.tasks import TASKS
    from polyticket.tasks.base import Task

    @TASKS.register("pos")
    class PosTask(Task):
        ...

The command line's choices, the config schema and the study validation all read the
registry, so the new name is accepted everywhere at once.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from polyticket.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, filled by the modules of ``package`` (imported on first use)."""

    def __init__(self, kind: str, package: str):
        self.kind = kind  # what an entry is, for messages: "task", "pruning criterion", ...
        self.package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Add ``entry`` under ``name``, which becomes its ``name`` attribute: what runs,
        run.json, mask metadata and messages call it is the name it is registered by."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            own = getattr(entry, "__dict__", {}).get("name", name)
            if own != name:  # one class under two names would write the first everywhere
                what = getattr(entry, "__name__", repr(entry))
                raise ValueError(f"{self.kind} {name!r}: {what} is named {own!r}")
            entry.name = name
            self._entries[name] = entry
            return entry

        return add

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register a toy one)."""
        self._entries.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before the imports: a module may read the registry as it loads
        before = dict(self._entries)
        try:
            module = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(module.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
        except BaseException:  # each later lookup raises the cause again, not "use one of …"
            self._loaded = False
            self._entries = before  # nor "registered twice" for what the failed module added
            raise

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}: use one of {', '.join(self.names())}")
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
