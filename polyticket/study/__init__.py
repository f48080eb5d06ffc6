"""Studies: the paper's grid of runs as cells, run resumably, in shards or on an executor.

- ``spec``: the study file: schema, validation, settings merged once;
- ``grid``: the cells (``kinds``, one module per kind), their dependencies, shards;
- ``runner`` and ``executors``: running the cells that are not done;
- ``outputs``: what the cells wrote, read back (scores, levels, the study's tickets).
"""

from polyticket.study.grid import Cell, cells, shard_of
from polyticket.study.runner import Outcome, plan, run_study
from polyticket.study.spec import Study, load_study, synthesize

__all__ = [
    "Cell",
    "Outcome",
    "Study",
    "cells",
    "load_study",
    "plan",
    "run_study",
    "shard_of",
    "synthesize",
]
