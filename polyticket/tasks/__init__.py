"""Tasks by name. Each module here registers its task (see ``polyticket.registry``); a new
task is one new file with ``@TASKS.register("name")`` on a ``tasks.base.Task`` subclass."""

from polyticket.registry import Registry

TASKS = Registry("task", __name__)
