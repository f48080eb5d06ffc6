"""The grid of a study: its cells, their dependencies, and shards of them.

Each run of a study is a cell named by what it is (``ner/fr/seed1/transfer-from-en-s50``).
The cell kinds (``study.kinds``) say which cells there are; this module orders them
(dependencies first) and splits them into shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from polyticket.errors import UserError

if TYPE_CHECKING:
    from polyticket.study.spec import Study


def percent(sparsity: Fraction) -> str:
    """``s50`` for 0.5: how sparsities appear in names."""
    return f"s{float(sparsity) * 100:g}"


@dataclass(frozen=True)
class Cell:
    """One run of the grid. ``language`` is the language trained on; ``source`` is whose
    ticket supplies the mask (a language for transfers, a task entry across tasks)."""

    kind: str  # a registered cell kind
    task: str  # the task entry's key
    language: str
    seed: int
    label: str  # the last part of the name: imp, random-s50, transfer-from-en-s50, ...
    source: str | None = None
    sparsity: Fraction | None = None
    deps: tuple[str, ...] = ()  # names of the cells whose files this one reads
    cost: float = 1.0  # expected cost in training runs (an IMP cell: one per level)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.language}/seed{self.seed}/{self.label}"

    def done(self, study: Study) -> bool:
        from polyticket.study.kinds import CELL_KINDS

        return CELL_KINDS[self.kind]().result(study, self).is_file()


def cells(study: Study) -> list[Cell]:
    """Every cell of the study, each after the cells it depends on."""
    from polyticket.study.kinds import CELL_KINDS

    every = [cell for name in CELL_KINDS for cell in CELL_KINDS[name]().expand(study)]
    return _dependencies_first(every)


def _dependencies_first(every: list[Cell]) -> list[Cell]:
    """A stable topological order: a cell keeps its place unless a dependency follows it."""
    by_name = {c.name: c for c in every}
    placed: set[str] = set()
    ordered: list[Cell] = []

    def place(cell: Cell) -> None:
        if cell.name in placed:
            return
        placed.add(cell.name)
        for dep in cell.deps:
            if dep in by_name:
                place(by_name[dep])
        ordered.append(cell)

    for cell in sorted(every, key=lambda c: (bool(c.deps), 0)):
        place(cell)
    return ordered


def shard_of(every: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` (1-based) of ``count`` (see ``shard_names``)."""
    if not 1 <= index <= count:
        raise UserError(f"--shard {index}/{count}: need 1 <= i <= n")
    mine = shard_names(every, count)[index - 1]
    return [c for c in every if c.name in mine]


def shard_names(every: list[Cell], count: int) -> list[set[str]]:
    """Split the cells into ``count`` shards of about equal expected cost.

    The units are the sets of cells tied by dependencies (a ticket with every cell that
    reads its masks), so that shards need nothing from each other. A set heavier than a
    shard's share (4 languages on 8 GPUs) is spread cell by cell instead: then a shard may
    reach a cell whose dependency another shard runs, and waits for it (the serial
    executor). Heaviest unit first, each to the least loaded shard; a pure function of the
    study file.
    """
    if count > max(1, len(every)):  # empty shards, or a list per shard nobody can hold
        raise UserError(
            f"--shard …/{count}: the study has {len(every)} cells; give at most that many shards"
        )
    share = sum(c.cost for c in every) / count
    units = []
    for part in _connected(every):
        # a set heavier than one shard's share would leave other shards idle: spread it
        units += [part] if sum(c.cost for c in part) <= share else [[c] for c in part]
    units.sort(key=lambda unit: (-sum(c.cost for c in unit), unit[0].name))
    loads = [0.0] * count
    shards: list[set[str]] = [set() for _ in range(count)]
    for unit in units:
        lightest = min(range(count), key=lambda i: (loads[i], i))
        loads[lightest] += sum(c.cost for c in unit)
        shards[lightest].update(c.name for c in unit)
    return shards


def _connected(every: list[Cell]) -> list[list[Cell]]:
    """Cells grouped into the connected parts of the dependency graph (union-find)."""
    parent = {c.name: c.name for c in every}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for cell in every:
        for dep in cell.deps:
            if dep in parent:
                parent[root(dep)] = root(cell.name)
    parts: dict[str, list[Cell]] = {}
    for cell in every:
        parts.setdefault(root(cell.name), []).append(cell)
    return list(parts.values())
