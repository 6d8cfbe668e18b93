"""Tasks: one module per learning problem -- its data, model kinds, loss, metrics, prediction and scoring.

This layer sits after ``evaluate`` in attnlab's one-way chain (core -> attention -> models -> data -> train ->
decode -> evaluate -> tasks -> pipeline -> viz -> cli). Importing it registers every task in
:data:`TASK_TYPES`; :func:`get_task` returns one by name.
"""

from attnlab.tasks.base import TASK_TYPES, Task, TestReport, get_task, register_task
from attnlab.tasks.captioning import CaptioningTask, ImageCaptioner
from attnlab.tasks.classification import ClassificationTask, Classifier, LabelPipeline, Prediction
from attnlab.tasks.image import ImageClassificationTask, ImageClassifier, ImagePipeline, ImagePrediction
from attnlab.tasks.text_to_text import SummarizationTask, TranslationTask, Translator

__all__ = ["TASK_TYPES", "CaptioningTask", "ClassificationTask", "Classifier", "ImageCaptioner",
           "ImageClassificationTask", "ImageClassifier", "ImagePipeline", "ImagePrediction", "LabelPipeline",
           "Prediction", "SummarizationTask", "Task", "TestReport", "TranslationTask", "Translator", "get_task",
           "register_task"]
