"""Tasks: one object per benchmark (loading, splits, exemplars, prompts, answer format, scoring).

``get_task("gsm8k")`` returns the registered task; ``register_task`` adds a user's :class:`Task` subclass
instance under its ``name``. The concept suite for transfer-fidelity studies lives in
:mod:`xsteer.tasks.concepts`.
"""

from __future__ import annotations

from xsteer.errors import InputError
from xsteer.tasks.base import SPLITS, VALIDATION_SIZE, Example, Task

_TASKS: dict[str, Task] = {}
_KIND_TASKS: dict[str, Task] = {}  # ``KIND:REST`` tasks made on first use (not listed by task_names)


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` available by its name everywhere a task name is accepted (CLI, configs, API)."""
    if not isinstance(task, Task):
        raise InputError(f"register_task takes a Task instance, got {type(task).__name__}")
    if task.name in _TASKS and not replace:
        raise InputError(f"a task named {task.name!r} is already registered (pass replace=True)")
    _TASKS[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a :class:`Task` passes through); ``KIND:REST`` names a behavioural A/B set
    (:mod:`xsteer.tasks.behaviour`: ``ab:refusal``, ``ab:PATH``, ``caa:BEHAVIOUR``), registered on first use."""
    if isinstance(name, Task):
        return name
    kind, sep, rest = name.partition(":")
    if name not in _TASKS and name not in _KIND_TASKS and sep:
        from xsteer.tasks.behaviour import TASK_KINDS

        if kind in TASK_KINDS:
            _KIND_TASKS[name] = TASK_KINDS[kind](rest)
    try:
        return _TASKS[name] if name in _TASKS else _KIND_TASKS[name]
    except KeyError:
        raise InputError(
            f"unknown task {name!r}; options: {', '.join(_TASKS)}, or a behavioural A/B set "
            "(ab:NAME, ab:PATH, caa:BEHAVIOUR)"
        ) from None


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def _register_builtins() -> None:
    from xsteer.tasks import arc, gsm8k, math, synthetic

    for task in (gsm8k.TASK, math.MATH, math.MATH500, arc.TASK, synthetic.TASK):
        register_task(task)


_register_builtins()

__all__ = ["SPLITS", "VALIDATION_SIZE", "Example", "Task", "get_task", "register_task", "task_names"]
