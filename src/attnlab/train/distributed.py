"""Data-parallel training across processes: torchrun, ``torch.distributed`` and DistributedDataParallel.

Launched by ``torchrun --standalone --nproc-per-node N -m attnlab train ...``, every process (rank) builds the
same model from the same seed, reads the same stream of batches, and trains on its share of each batch:

- **The batch is global.** ``train.tokens_per_batch`` (``train.batch_size`` for images) sizes the batch of the
  whole group; rank ``r`` of ``N`` takes rows ``[B*r//N, B*(r+1)//N)`` of every batch (:func:`shard`). Every
  rank therefore sees the same number of batches per epoch, and the data position saved in a checkpoint is
  global: a run resumes under another number of processes.
- **The loss is normalised by the global count.** Each rank's summed loss is divided by the count of the whole
  group (one all-reduce of ``[loss_sum, count]`` per step), and DistributedDataParallel reduces the float32
  gradients with a SUM hook (:func:`sum_hook`) instead of its default average: the sum of the ranks' gradients
  of ``loss_r / count`` is the gradient of one process's ``loss / count``. (We avoid gloo's AVG and low-precision
  reductions, which have known problems.) So N ranks train the model one process trains, up to the order of
  float sums -- and dropout, whose masks under DDP are drawn per rank (:func:`seed_step`).
- **Rank 0 alone writes** checkpoints, snapshots, metrics and progress, and evaluates; the others wait for it
  at the next collective. Decisions that depend on a clock or a signal (time budgets, Ctrl-C/SIGTERM, early
  stopping) are taken together (:meth:`DistContext.agree`), so no rank waits forever at a collective.

One process is the default and needs nothing: :func:`setup` returns a context with ``world_size == 1`` and the
trainer takes its single-process path, unchanged.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch
import torch.distributed as dist

from attnlab.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["DistContext", "SINGLE", "resolve_device", "rows", "seed_step", "setup", "shard", "sum_hook", "teardown"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT = datetime.timedelta(minutes=30)
"""How long a collective waits for the other ranks (rank 0 evaluates and saves while the others wait)."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 6:
        raise ConfigError(f"environment variable {name}: got {raw[:20]!r}, expected a small non-negative integer "
                          f"(set by torchrun)")
    return int(raw)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in its group: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether training is data-parallel across several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes, logs and evaluates."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """The elementwise sum of ``values`` over the ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def agree(self, main_values: list[float], flags: list[bool]) -> tuple[list[float], list[bool]]:
        """One collective for the decisions the ranks must share: ``main_values`` as rank 0 has them (clocks,
        whose readings differ per process) and ``flags`` true on any rank (a signal may reach one process)."""
        if not self.enabled:
            return list(main_values), list(flags)
        own = [v if self.is_main else 0.0 for v in main_values]  # values >= 0: the max is rank 0's
        t = torch.tensor(own + [float(f) for f in flags], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        values = t.tolist()
        return values[:len(main_values)], [v > 0 for v in values[len(main_values):]]

    def broadcast_json(self, obj: Any) -> Any:
        """Rank 0's JSON-ready ``obj`` (tokenizer and vocabulary state) on every rank, sent as UTF-8 JSON bytes
        (never pickled)."""
        if not self.enabled:
            return obj
        payload = json.dumps(obj).encode("utf-8") if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.int64)
        dist.broadcast(size, src=0)
        buffer = (torch.frombuffer(bytearray(payload), dtype=torch.uint8) if self.is_main
                  else torch.empty(int(size), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return obj if self.is_main else json.loads(buffer.numpy().tobytes().decode("utf-8"))


SINGLE = DistContext()


def setup(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1), once per process.

    Returns the context and the device to train on: CUDA (the GPU of the local rank under torchrun) when
    ``device`` is ``cuda``, or ``auto`` and CUDA is available; else the CPU. The backend is NCCL on CUDA and
    gloo on the CPU. Without torchrun (or with one process) nothing is initialized.
    """
    world = _env_int("WORLD_SIZE", 1)
    ctx = DistContext(rank=_env_int("RANK", 0), world_size=world, local_rank=_env_int("LOCAL_RANK", 0))
    if ctx.rank >= max(world, 1):
        raise ConfigError(f"environment: RANK {ctx.rank} is not below WORLD_SIZE {world}")
    dev = resolve_device(device, ctx)
    if ctx.enabled and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(f"WORLD_SIZE is {world} but {name} is not set: launch with torchrun "
                                  f"(e.g. torchrun --standalone --nproc-per-node {world} -m attnlab train ...)")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        logger.info("rank %d: joining %d processes at %s:%s (waits up to %s for the others)", ctx.rank, world,
                    os.environ["MASTER_ADDR"][:80], os.environ["MASTER_PORT"][:10], TIMEOUT)
        dist.init_process_group(backend, timeout=TIMEOUT)  # env:// rendezvous: torchrun's variables
        if not ctx.is_main:  # one log for the group: the other ranks report warnings and errors only
            logging.getLogger("attnlab").setLevel(logging.WARNING)
        logger.info("data-parallel training: rank %d of %d (%s on %s)", ctx.rank, world, backend, dev)
    return ctx, dev


def teardown() -> None:
    """Leave the process group (at the end of a command run under torchrun); nothing without one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str, ctx: DistContext = SINGLE) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` -> the torch device of this process (``cuda:LOCAL_RANK`` under torchrun)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device: got {str(device)[:20]!r}, expected auto, cpu or cuda")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but this torch build sees no CUDA device; "
                          "use device: auto or cpu")
    torch.cuda.set_device(ctx.local_rank)  # untested here: no GPU on our machines
    return torch.device("cuda", ctx.local_rank)


def rows(batch: Any) -> int:
    """The batch size of a batch dataclass (the first dimension of its first field)."""
    return int(getattr(batch, fields(batch)[0].name).shape[0])


def shard(batch: Any, ctx: DistContext) -> Any:
    """This rank's rows of a batch dataclass whose tensor fields all have the batch size first: rows
    ``[B*r//N, B*(r+1)//N)`` (possibly none, when a batch has fewer rows than there are ranks)."""
    if not ctx.enabled:
        return batch
    if not is_dataclass(batch):
        raise TypeError(f"shard: expected a batch dataclass (Batch, LabelBatch, ImageBatch), got "
                        f"{type(batch).__name__}")
    tensors = {f.name: getattr(batch, f.name) for f in fields(batch)}
    size = next(iter(tensors.values())).shape[0]
    lo, hi = size * ctx.rank // ctx.world_size, size * (ctx.rank + 1) // ctx.world_size
    return type(batch)(**{name: t[lo:hi] for name, t in tensors.items()})


def sum_hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """A DDP communication hook: all-reduce a gradient bucket with SUM and no division (see the module
    docstring: each rank's loss is already divided by the global count)."""
    buffer = bucket.buffer()
    if buffer.dtype != torch.float32:
        raise TypeError(f"sum_hook reduces float32 gradients, got {buffer.dtype}; keep parameters in float32")
    work = dist.all_reduce(buffer, op=dist.ReduceOp.SUM, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


# DDP checks the hook's annotations as objects; ``from __future__ import annotations`` made them strings.
sum_hook.__annotations__ = {"state": Any, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


def seed_step(seed: int, step: int, ctx: DistContext) -> None:
    """Under DDP, seed the global generator for ``step`` from ``(seed, step, rank)``: each rank draws its own
    dropout masks, and a resumed run (under any number of processes) draws what an uninterrupted one would,
    without saving every rank's generator state."""
    if ctx.enabled:
        mixed = (seed * 1_000_003 + step) * 1009 + ctx.rank
        torch.manual_seed(mixed % (2**63 - 1))
