"""A step of a fit run in a fresh process, so its memory goes back when it ends.

Why: a TensorFlow/Keras process keeps about 0.25-0.3 GB per model.fit after the model is gone
(measured on the shared data with Lite0: the growth stayed with keras.backend.clear_session,
MALLOC_ARENA_MAX=2 and oneDNN off, and came from fit itself, not from the data, the converter or
the int8 interpreter). Seven cross-validation folds and the final fit in one process peaked at
6.8 GB where one fit needs about 4.2 GB. Each fold trained in a process of its own hands back only
what the fit records (picklable results) and exits, so the peak no longer grows with the folds.

"spawn", not fork: a fork would copy TensorFlow's threads and state (not fork-safe). The child
imports the training code afresh (a few seconds, against minutes of training per fold) and goes
on with the parent's progress display: the epoch count and the time-left estimate carry over.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from edge.errors import CommandError
from train import progress

Result = TypeVar("Result")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _start_child(parent: int) -> None:
    """The child's first steps, before any work reaches it: end with the fit that started it, then
    import TensorFlow (unpickling a fit's step imports it) with its banner filtered, as `fit` does."""
    if sys.platform == "linux":
        # A fit stopped by `kill` (Ctrl-C reaches the whole process group, kill only the fit) would
        # leave its fold training on for minutes, gigabytes and a core held: the kernel sends the
        # child SIGTERM when its parent dies. A parent gone before this line is checked by pid.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)
    from edge.classify.native_noise import native_noise_filtered

    with native_noise_filtered():
        import tensorflow  # noqa: F401


def _in_child(
    saved: tuple[bool, int, int, float], step: Callable[..., Result], args: tuple[Any, ...]
) -> tuple[Result, tuple[bool, int, int, float]]:
    progress.restore(saved)
    return step(*args), progress.state()


def in_fresh_process(what: str, step: Callable[..., Result], *args: Any) -> Result:
    """``step(*args)`` in a new process (``step`` a module-level function, arguments and result
    picklable); its exceptions are raised here as they were there."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_start_child, initargs=(os.getpid(),)
    ) as pool:
        try:
            result, saved = pool.submit(_in_child, progress.state(), step, args).result()
        except BrokenProcessPool:
            raise CommandError(
                f"{what}: its process ended without a result (killed, perhaps by the kernel for want of "
                "memory: see `dmesg`); nothing was written"
            ) from None
    progress.restore(saved)
    return result
