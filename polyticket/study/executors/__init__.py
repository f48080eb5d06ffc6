"""Executors by name: where and when a study's cells run. Each module here registers one
(``executors.base.Executor``); ``polyticket study --executor NAME`` picks it."""

from polyticket.registry import Registry

EXECUTORS = Registry("executor", __name__)
