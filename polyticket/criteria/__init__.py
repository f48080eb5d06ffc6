"""Pruning criteria by name: how a level scores the kept weights (higher = keep).

Each module here registers one (see ``polyticket.registry``); ``find --method NAME`` and a
study's ``method`` pick it. A new criterion is one new file::

    @CRITERIA.register("taylor")
    class Taylor(Criterion):
        def scores(self, level): ...
"""

from polyticket.registry import Registry

CRITERIA = Registry("pruning criterion", __name__)


def knobs_unread_by(method: str | None) -> set[str]:
    """The criteria's own knobs (``Criterion.knobs``) that pruning by ``method`` never reads."""
    own = {name: set(CRITERIA[name].knobs) for name in CRITERIA}
    return set().union(*own.values()) - own.get(method, set())
