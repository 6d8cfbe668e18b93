"""A recipe plus overrides -> a :class:`RunConfig`: what ``attnlab train`` does with its flags, as a library call.

Layers, each over the one before (the last word wins)::

    the task's defaults for the model kind  <  a saved run (resume)  <  the recipe file  <  flags  <  overrides

For example, the Rotten Tomatoes recipe with a larger learning rate, as ``attnlab train --config ... --set
train.lr=0.01`` builds it::

    from attnlab.pipeline import build_run_config, train_run
    cfg = build_run_config("configs/rotten-tomatoes-sentiment.yaml", overrides=["train.lr=0.01"])
    train_run(cfg, "runs/rt-lr")

``overrides`` are ``"SECTION.KEY=VALUE"`` strings (values parsed as YAML: numbers, booleans, lists) or a mapping
``{"train": {"lr": 0.01}}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from attnlab.core.config import load_file, yaml_loads
from attnlab.core.errors import ConfigError, short_repr
from attnlab.core.registry import CORPORA, SYNTHETIC, TASKS, task_of_source
from attnlab.core.run_config import SECTIONS, RunConfig, check_model_kind, default_model_kind, merge_dicts

__all__ = ["build_run_config", "parse_overrides"]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["train.lr=0.001", "model.hidden_size=256"]`` -> ``{"train": {"lr": 0.001}, "model": {...}}``.

    Raises:
        ConfigError: an item that is not ``SECTION.KEY=VALUE`` with SECTION one of data, model, train, decode.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigError(f"--set {short_repr(item)}: expected SECTION.KEY=VALUE with SECTION one of data, model, "
                              f"train, decode (e.g. --set train.lr=0.001)")
        try:
            value = yaml_loads(raw)  # numbers (1e-3 included), booleans, null, lists like [0.9, 0.98]
        except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: 2026-13-45, a number of 5,000 digits
            value = raw  # a plain string; the option's own check then says what it expects
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def build_run_config(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, *,
                     overrides: Iterable[str] | Mapping[str, Any] = (), model: str | None = None,
                     flags: Mapping[str, Any] | None = None, saved: Mapping[str, Any] | None = None) -> RunConfig:
    """Merge the layers of the module docstring into a checked :class:`RunConfig`.

    Args:
        config: a recipe (YAML/JSON file) or an already loaded mapping of sections; ``None``: defaults only.
        overrides: ``"SECTION.KEY=VALUE"`` strings or a mapping of sections, applied last.
        model: a model kind; switching to another family than the recipe's drops the recipe's model options.
        flags: sections set by command-line flags (``{"data": {"source": ...}, "train": {...}, "task": ...}``),
            between the recipe and ``overrides``.
        saved: the saved run config of a run being resumed (``OUT/config.json``); a new run (``None``) starts
            from the task's defaults for the model kind instead.

    Raises:
        ConfigError: an unreadable recipe, a section that is not a mapping, an unknown task/source/model kind,
            a bad override, or any option out of range (the message names it).
    """
    where = str(config) if isinstance(config, str | os.PathLike) else "config"
    base: dict[str, Any] = dict(saved or {})
    if isinstance(config, str | os.PathLike):
        base = merge_dicts(base, load_file(Path(config)))
    elif config is not None:
        base = merge_dicts(base, dict(config))
    given = dict(flags or {})
    given_data = dict(given.get("data", {}))
    for name in SECTIONS:
        if name in base and not isinstance(base[name], dict):
            raise ConfigError(f"{where}: section {name!r} must be a mapping of options, got "
                              f"{type(base[name]).__name__}")
    task = _task_of(base, given, given_data)
    check_model_kind(base.get("model", {}).get("kind"), where=f"{where}: model.kind")
    kind = model or base.get("model", {}).get("kind") or default_model_kind(task)
    defaults: dict[str, Any] = {}
    if saved is None:  # a new run: the task's defaults under everything the user gave
        from attnlab.tasks import get_task

        source = given_data.get("source") or base.get("data", {}).get("source", "task")
        defaults = get_task(task).defaults(kind, synthetic=source == "task")
    if model and base.get("model", {}).get("kind", model) != model:
        base["model"] = {"kind": model}  # switching family: the other family's options do not apply
    last = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    merged = merge_dicts(merge_dicts(merge_dicts(defaults, base), given), last)
    return RunConfig.from_dict(merged)


def _task_of(base: dict[str, Any], flags: dict[str, Any], flag_data: dict[str, Any]) -> str:
    """The task the merged config will have (for choosing defaults before the config is built)."""
    task = flags.get("task") or base.get("task")
    if task is not None:
        if not isinstance(task, str) or task not in TASKS:
            raise ConfigError(f"task: got {short_repr(task)}, expected one of {', '.join(TASKS)}")
        return task
    data = {**base.get("data", {}), **flag_data}
    source, synthetic = data.get("source", "task"), data.get("task", "dates")
    try:
        return task_of_source(source, synthetic)[0]
    except (KeyError, TypeError):
        raise ConfigError(f"data.source {short_repr(source)} / data.task {short_repr(synthetic)}: expected a source "
                          f"among task, {', '.join(CORPORA)} and a synthetic dataset among "
                          f"{', '.join(SYNTHETIC)}") from None
