"""One run end to end: data -> model -> train (with validation by decoding) -> load for inference.

This layer sits after ``evaluate`` in attnlab's one-way chain (core -> attention -> models -> data ->
train -> decode -> evaluate -> pipeline -> viz -> cli): it composes the layers below into the jobs the CLI
runs, and adds no math of its own.
"""

from attnlab.pipeline.average import average_checkpoints
from attnlab.pipeline.load import Translator, load_translator, resolve_checkpoint
from attnlab.pipeline.run import RunResult, train_run
from attnlab.pipeline.validate import exact_match, make_evaluator, score_pairs

__all__ = ["RunResult", "Translator", "average_checkpoints", "exact_match", "load_translator", "make_evaluator",
           "resolve_checkpoint", "score_pairs", "train_run"]
