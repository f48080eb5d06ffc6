"""What an executor is: it runs a list of cells, each after its dependencies, with
``runner.execute`` (which logs, records failures and never raises for a failing cell)."""

from __future__ import annotations

from polyticket.study.grid import Cell
from polyticket.study.runner import Outcome
from polyticket.study.spec import Study


class Executor:
    def __init__(self, **options: object):
        self.options = options

    def run(self, study: Study, pending: list[Cell], outcome: Outcome) -> None:
        """Run ``pending`` (dependencies first in the list; none of them done), recording
        each result in ``outcome``. A cell whose dependency failed is not run."""
        raise NotImplementedError
