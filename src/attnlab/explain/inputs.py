"""Examples to explain from a checkpoint's own data: ``n`` of its test (or validation) split, spread evenly."""

from __future__ import annotations

import logging
from typing import Any

from attnlab.core.errors import ConfigError, DataError
from attnlab.explain.adapters import Adapter, Example

log = logging.getLogger(__name__)


def split_examples(adapter: Adapter, predictor: Any, extra: Any, *, split: str = "test", n: int = 100) -> list[Example]:
    """``n`` examples spread evenly over ``split`` of the data the predictor's run was trained on.

    The data is read again with the run's own options and the checkpoint's pipeline (``extra``), as
    ``attnlab evaluate`` does. Texts that hold no token for the model are skipped (and counted in the log).
    """
    from attnlab.tasks import get_task
    from attnlab.tasks.text_to_text import spread_sample

    if split not in ("test", "valid"):
        raise ConfigError(f"split must be 'test' or 'valid', got {split!r:.40}")
    cfg = predictor.config
    data = get_task(cfg.task_name).prepare(cfg, extra, where=str(predictor.path))
    items = data.test if split == "test" else data.valid
    if len(items) == 0:
        raise ConfigError(f"the data of {predictor.path} has no {split} split")
    if adapter.kind == "image":
        labels = adapter.labels
        picked = spread_sample(list(range(len(items))), n)
        return [adapter.example(items.images[i].numpy(), name=f"{split} image {i}",
                                truth=labels[int(items.labels[i])] if labels else None) for i in picked]
    out, skipped = [], 0
    for source, truth in spread_sample(list(items), n):
        try:
            out.append(adapter.example(source, truth=truth))
        except DataError:
            skipped += 1
    if skipped:
        log.info("skipped %d %s example(s) that hold no token for the model", skipped, split)
    if not out:
        raise DataError(f"no {split} example holds a token for this model")
    return out
