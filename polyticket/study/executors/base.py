"""What an executor is: it runs a list of cells, each after its dependencies, with
``runner.execute`` (which logs, records failures and never raises for a failing cell)."""

from __future__ import annotations

from polyticket.config import flag_of
from polyticket.errors import UserError
from polyticket.study.grid import Cell
from polyticket.study.runner import Outcome
from polyticket.study.spec import Study


class Executor:
    name: str = ""  # set by ``EXECUTORS.register``
    # the options (``polyticket study`` flags, as keyword names) this executor understands
    accepts: tuple[str, ...] = ()

    def __init__(self, **options: object):
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - set(self.accepts))
        if unknown:
            flags = ", ".join(map(flag_of, unknown))
            takes = ", ".join(map(flag_of, self.accepts)) or "none"
            raise UserError(f"{flags}: not an option of --executor {self.name} (it takes {takes})")
        self.options = given

    def run(self, study: Study, pending: list[Cell], outcome: Outcome) -> None:
        """Run ``pending`` (dependencies first in the list; none of them done), recording
        each result in ``outcome``. A cell whose dependency failed is not run."""
        raise NotImplementedError
