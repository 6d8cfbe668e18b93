"""Data-parallel training on this machine from one command: ``train.processes: N``.

``attnlab train`` with ``train.processes`` above 1 (and not already under torchrun) becomes rank 0 of a group of
N processes: it starts N-1 workers (``python -m attnlab train`` with the run's resolved configuration) and sets,
for itself and for them, the variables torchrun's ``env://`` rendezvous sets (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT``). From there on the
group trains exactly as under ``torchrun --standalone --nproc-per-node N`` (:mod:`attnlab.train.distributed`).
torchrun remains the launcher for several machines and for GPUs; this one exists because on a small CPU machine
N one-thread processes use the cores better than one N-thread process, and a recipe should say so itself.

Nothing waits forever: rank 0 owns the workers. Ctrl-C from a terminal reaches every process of the group (they
share the terminal's process group) and a signal to rank 0 alone reaches the others through the per-step agreement;
either way all stop after the same step with a saved checkpoint. If rank 0 fails, its workers get SIGTERM and, after
a grace period, SIGKILL; if a worker fails, rank 0's next collective fails and the command ends with the worker's
exit code and one line naming it (the worker's own message is printed above it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from attnlab.core.errors import AttnlabError

logger = logging.getLogger(__name__)

__all__ = ["GRACE_S", "WorkerFailed", "ignored_processes", "local_group", "under_launcher"]

GRACE_S = 60.0
"""How long rank 0 waits for its workers to end (after training, or after SIGTERM on a failure) before killing them."""
SETTLE_S = 3.0
"""How long rank 0, failing, lets its workers end on their own before it tells whose failure it was."""
STUCK_S = 30.0
"""How long rank 0 may go on after a worker failed before the watchdog ends it (it may wait in a collective that
only a timeout of minutes would end, e.g. joining the group)."""

_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class WorkerFailed(AttnlabError):
    """A worker process of ``train.processes`` ended with an error; ``exit_code`` is the worker's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[assignment]  # the worker's own code, not a class default


def under_launcher() -> bool:
    """Whether this process already belongs to a group (torchrun's or ours): ``WORLD_SIZE`` is set."""
    return bool(os.environ.get("WORLD_SIZE"))


def ignored_processes(processes: int) -> str | None:
    """Under a launcher that made a group of another size (torchrun's ``--nproc-per-node``), the line that says
    ``train.processes`` does not apply; ``None`` otherwise (one process, our own group, or rank 1 and above)."""
    world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK", "0")
    if processes <= 1 or not world or world == str(processes) or rank != "0":
        return None
    return (f"note: train.processes: {processes} does not apply here: a launcher (torchrun) started this group "
            f"of {world[:8]} processes")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Workers:
    """The started worker processes, rank 1 to N-1."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = list(procs)

    def failed(self) -> tuple[int, int] | None:
        """``(rank, exit code)`` of the first worker that ended with an error, if any (does not wait)."""
        for rank, proc in enumerate(self.procs, start=1):
            code = proc.poll()
            if code not in (None, 0):
                return rank, _exit_code(code)
        return None

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """SIGTERM to every live worker (they save and stop like rank 0), SIGKILL after :data:`GRACE_S`."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self.wait(GRACE_S)
        for proc in self.procs:
            if proc.poll() is None:
                logger.warning("worker pid %d did not stop within %.0f s; killing it", proc.pid, GRACE_S)
                proc.kill()
                proc.wait()


def _exit_code(code: int) -> int:
    """A Popen return code as a shell reports it (a negative code is a signal: 128 + its number)."""
    return 128 - code if code < 0 else code


def _describe(rank: int, code: int) -> str:
    what = ""
    if code > 128:
        with contextlib.suppress(ValueError):
            what = f" ({signal.Signals(code - 128).name})"
    return f"worker rank {rank} of train.processes ended with exit code {code}{what}; its own error, if any, is above"


def _watchdog(workers: _Workers, done: threading.Event) -> None:
    """End rank 0 (one line, the worker's exit code) when a worker failed and rank 0 is still in the body
    :data:`STUCK_S` later. Checkpoints are written atomically, so ending the process cannot corrupt one."""
    while not done.wait(1.0):
        failed = workers.failed()
        if failed is None:
            continue
        if done.wait(STUCK_S):
            return
        print(f"attnlab train: error: {_describe(*failed)}", file=sys.stderr, flush=True)
        workers.stop()
        os._exit(failed[1])


@contextlib.contextmanager
def local_group(processes: int, config: dict[str, Any], out_dir: str | os.PathLike[str], *,
                resume: bool) -> Iterator[None]:
    """Run the body as rank 0 of ``processes`` training processes on this machine (see the module docstring).

    ``config`` is the run's resolved configuration (what ``--config`` gives the workers). The group's environment
    variables are set for the body and restored afterwards. On leaving normally, rank 0 waits for the workers
    (they end when training does) and raises :class:`WorkerFailed` if one failed; on an exception, the workers
    are stopped, and a worker's failure (the likely cause of an error in a collective) is reported instead of
    rank 0's.
    """
    fd, name = tempfile.mkstemp(prefix="attnlab-run-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config, fh)
    argv = [sys.executable, "-m", "attnlab", "train", "--config", name, "--out", os.fspath(out_dir), "--no-progress",
            *(["--resume"] if resume else [])]
    group = {"WORLD_SIZE": str(processes), "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(_free_port())}
    saved = {key: os.environ.get(key) for key in _GROUP_ENV}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(1, processes):
            env = {**os.environ, **group, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            procs.append(subprocess.Popen(argv, env=env))
        workers = _Workers(procs)
        os.environ.update(group, RANK="0", LOCAL_RANK="0")
        logger.info("train.processes=%d: rank 0 of %d on 127.0.0.1:%s (workers: pid %s)", processes, processes,
                    group["MASTER_PORT"], ", ".join(str(p.pid) for p in procs))
        done = threading.Event()
        threading.Thread(target=_watchdog, args=(workers, done), name="attnlab-workers", daemon=True).start()
        try:
            yield
        except BaseException as exc:
            done.set()
            # Whose failure is it? A worker that died breaks rank 0's next collective: it has ended (or ends
            # within moments) on its own, before rank 0 stops the others.
            workers.wait(SETTLE_S)
            failed = workers.failed()
            workers.stop()
            if failed is not None and not isinstance(exc, (AttnlabError, KeyboardInterrupt)):
                raise WorkerFailed(_describe(*failed), failed[1]) from None
            raise
        done.set()
        workers.wait(GRACE_S)
        failed = workers.failed()
        if failed is None and any(p.poll() is None for p in procs):
            workers.stop()
            failed = workers.failed()
        if failed is not None:
            raise WorkerFailed(_describe(*failed), failed[1])
    finally:
        for proc in procs:  # a failed start: nothing may outlive the command
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Path(name).unlink(missing_ok=True)
