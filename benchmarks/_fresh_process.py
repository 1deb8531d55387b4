"""Run one measurement in a fresh process so that its peak memory is its own.

``in_fresh_process(fit, *args)`` spawns a process that calls ``fit(*args)`` (a module-level
function returning a dict of figures) and returns that dict with ``peak_gib``, the peak
resident memory of that process, and ``worker_peak_gib``, that of its largest finished child
(the executor's workers) [GiB]. A failure in the child is raised in the caller.
"""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable
from typing import Any


def _run(fit: Callable[..., dict[str, Any]], args: tuple[Any, ...], queue: Any) -> None:
    try:
        result = dict(fit(*args))
    except BaseException as err:  # the parent waits on the queue: send the failure
        queue.put(RuntimeError(f"{fit.__name__}{args} failed: {type(err).__name__}: {err}"))
        raise
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["worker_peak_gib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    queue.put(result)


def in_fresh_process(fit: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fit(*args)`` in a spawned process, with its peak memory (module docstring)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(fit, args, queue))
    process.start()
    result = queue.get()
    process.join()
    if isinstance(result, BaseException):
        raise result
    return dict(result)
