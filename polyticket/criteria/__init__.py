"""Pruning criteria by name: how a level scores the kept weights (higher = keep).

Each module here registers one (see ``polyticket.registry``); ``find --method NAME`` and a
study's ``method`` pick it. A new criterion is one new file::

    @CRITERIA.register("taylor")
    class Taylor(Criterion):
        def scores(self, level): ...
"""

from polyticket.registry import Registry

CRITERIA = Registry("pruning criterion", __name__)
