"""One run end to end for any task: data -> model -> train (with validation) -> test scores -> load for inference.

This layer sits after ``tasks`` in attnlab's one-way chain (core -> attention -> models -> data -> train ->
decode -> evaluate -> tasks -> pipeline -> viz -> cli): it composes the task's pieces into the jobs the CLI
runs, and adds no math of its own.
"""

from attnlab.pipeline.average import average_checkpoints
from attnlab.pipeline.config import build_run_config, parse_overrides
from attnlab.pipeline.load import (
    Classifier,
    Translator,
    load_predictor,
    load_translator,
    predictor_from_checkpoint,
    resolve_checkpoint,
)
from attnlab.pipeline.run import RunResult, score_checkpoint, score_test, train_run
from attnlab.pipeline.validate import exact_match, make_evaluator, score_pairs

__all__ = ["Classifier", "RunResult", "Translator", "average_checkpoints", "build_run_config", "exact_match",
           "load_predictor", "load_translator", "make_evaluator", "parse_overrides", "predictor_from_checkpoint",
           "resolve_checkpoint", "score_checkpoint", "score_pairs", "score_test", "train_run"]
