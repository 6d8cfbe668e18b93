"""Graceful Ctrl-C / SIGTERM handling for training: stop at the next step boundary, save, exit 130/143.

:class:`StopSignals` replaces the SIGINT and SIGTERM handlers while training runs. The first signal
only records a stop request; the trainer finishes its current step, saves the latest checkpoint and
raises :class:`TrainingInterrupted`. Inside :meth:`StopSignals.critical` (checkpoint writing) every
signal is deferred, so a second Ctrl-C cannot corrupt the save. A second signal outside a critical
section stops at once without saving (the previous checkpoint stays intact) -- unless ``abort_on_second`` is
off, as under torchrun, where one Ctrl-C reaches a process twice (from the terminal and from torchrun, which
kills its processes itself if they have not ended after its shutdown timeout, 30 s by default). Previous handlers are
restored on exit. Outside the main thread (where Python cannot install handlers) it does nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from attnlab.core.errors import AttnlabError, ExitCode

logger = logging.getLogger(__name__)

__all__ = ["StopSignals", "TrainingInterrupted", "exit_code_for"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int) -> ExitCode:
    """The conventional exit code of a process stopped by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.TERMINATED


class TrainingInterrupted(AttnlabError):
    """Training stopped by SIGINT (exit code 130) or SIGTERM (143).

    Attributes:
        signum: the signal that stopped training.
        step: the last completed step (``None`` if unknown).
        saved: whether the latest checkpoint was written at that step.
    """

    def __init__(self, message: str, *, signum: int, step: int | None = None, saved: bool = False) -> None:
        super().__init__(message)
        self.signum = signum
        self.step = step
        self.saved = saved
        self.exit_code = exit_code_for(signum)


class StopSignals:
    """Context manager recording SIGINT/SIGTERM as a stop request (see the module docstring)."""

    def __init__(self, *, abort_on_second: bool = True) -> None:
        self.abort_on_second = abort_on_second
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._critical = 0
        self._installed = False

    @property
    def requested(self) -> bool:
        """Whether a stop was requested (by a signal or :meth:`request`)."""
        return self.signum is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Request a stop as if ``signum`` had arrived (for callers that are not signal handlers)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            logger.warning("%s received: stopping after the current step and saving a checkpoint "
                           "(press Ctrl-C again to stop at once without saving)", name)
        elif self._critical:
            logger.warning("%s received while saving: the checkpoint is finished first", name)
        elif not self.abort_on_second:
            logger.warning("%s received again: still stopping after the current step", name)
        else:
            raise TrainingInterrupted(f"stopped at once by a second {name}; the current step was not saved "
                                      f"(the previous checkpoint is intact)", signum=signum)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Defer every signal (they are only recorded) while the body runs, e.g. while writing a checkpoint."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: Ctrl-C/SIGTERM will not be handled gracefully")
            return self
        for signum in _HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            self._previous.clear()
            self._installed = False
