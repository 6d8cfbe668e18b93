"""What a task is: everything that differs between learning problems, behind one interface.

A :class:`Task` owns how its data is read and batched, which model kinds fit it, its loss, its validation
metrics, how a trained checkpoint becomes a predictor, and how the test split is scored. The pipeline
(:mod:`attnlab.pipeline`) and the trainer (:class:`attnlab.train.Trainer`) only call these methods, so a run of
any task is prepared, trained, resumed, checkpointed and scored the same way.

The names of the tasks are listed once in :data:`attnlab.core.registry.TASKS`; :data:`TASK_TYPES` maps each to
its implementation (a test checks that the two agree).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.core.registry import TASKS
from attnlab.core.run_config import RunConfig
from attnlab.train.checkpoint import Checkpoint
from attnlab.train.trainer import BatchSource, Evaluate, LossFn

__all__ = ["Prepared", "Task", "TASK_TYPES", "TestReport", "get_task", "register_task"]


class Prepared(Protocol):
    """What a task's :meth:`Task.prepare` returns: the raw splits, the encoded training data and the state
    that turns text into ids (saved with every checkpoint, restored on resume and for inference)."""

    train: list[Any]
    valid: list[Any]
    test: list[Any]

    def extra_state(self) -> dict[str, Any]: ...


@dataclass
class TestReport:
    """The test-split scores of one decoding/prediction setting.

    Attributes:
        name: the setting (``"beam1"``, ``"beam5"``, ``"model"``, ``"baseline"``).
        metrics: JSON-ready numbers (and signatures).
        line: one human-readable line for the CLI.
    """

    name: str
    metrics: dict[str, Any]
    line: str
    outputs: list[str] = field(default_factory=list, repr=False)


class Task(ABC):
    """One learning problem (see the module docstring)."""

    name: ClassVar[str]

    @property
    def model_kinds(self) -> tuple[str, ...]:
        return TASKS[self.name].model_kinds

    @abstractmethod
    def defaults(self, model_kind: str, *, synthetic: bool) -> dict[str, Any]:
        """Config defaults (sections as dicts) for a new run with ``model_kind``, under everything the user gives."""

    @abstractmethod
    def prepare(self, cfg: RunConfig, saved: Mapping[str, Any] | None = None, *, where: str = "checkpoint") -> Any:
        """Read or generate the splits and encode them; ``saved`` is a checkpoint's extra state (tokenizers and
        vocabularies are then restored from it instead of fitted, so ids cannot shift)."""

    @abstractmethod
    def build_model(self, cfg: RunConfig, data: Any) -> nn.Module:
        """The model ``cfg.model`` describes, sized for ``data`` (vocabularies, classes)."""

    @abstractmethod
    def train_batches(self, data: Any, cfg: RunConfig) -> BatchSource:
        """The training batches, resumable (see :class:`attnlab.train.trainer.BatchSource`)."""

    @abstractmethod
    def loss(self, cfg: RunConfig) -> LossFn:
        """The training loss ``(model, batch) -> (loss_sum, count)``."""

    @abstractmethod
    def evaluator(self, data: Any, cfg: RunConfig) -> Evaluate:
        """The validation run every ``eval_every`` steps: ``model -> {"val_...": value}``."""

    @abstractmethod
    def load(self, ckpt: Checkpoint, cfg: RunConfig) -> Any:
        """A predictor (model in eval mode + its text pipeline) from a checkpoint of this task."""

    @abstractmethod
    def score(self, predictor: Any, examples: Sequence[Any], cfg: RunConfig, *,
              beams: Sequence[int] = (1,), baseline_data: Any = None) -> list[TestReport]:
        """Score ``examples`` (e.g. the test split) with ``predictor``: one report per setting."""


TASK_TYPES: dict[str, type[Task]] = {}
"""Task implementations by name (filled by :func:`register_task` as ``attnlab.tasks`` is imported)."""


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the implementation of the task ``cls.name`` (listed in the core registry)."""
    if cls.name not in TASKS:
        raise ConfigError(f"task {cls.name!r} is not listed in attnlab.core.registry.TASKS")
    TASK_TYPES[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    """The task called ``name`` (one of :data:`attnlab.core.registry.TASKS`)."""
    import attnlab.tasks  # noqa: F401  (registers every task)

    if name not in TASK_TYPES:
        raise ConfigError(f"unknown task {str(name)[:40]!r}; expected one of {', '.join(TASKS)}")
    return TASK_TYPES[name]()
