"""Cell kinds by name: what a study can run. Each module here registers one
(``kinds.base.CellKind``): its ``run:`` options, the cells it adds to the grid, and how one
of its cells runs. A new kind is one new file; ``run:`` accepts its options at once
(its tables and report section, if any, are added in ``analysis/``)."""

from polyticket.registry import Registry

CELL_KINDS = Registry("cell kind", __name__)
