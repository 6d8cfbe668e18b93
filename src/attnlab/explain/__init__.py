"""Beyond raw attention: attention flow, gradient-weighted rollout, attribution and a faithfulness report.

Attention weights are not an explanation by themselves (Jain & Wallace, 2019; Wiegreffe & Pinter, 2019). This
package puts attention-based importance (raw attention, rollout, attention flow, gradient-weighted rollout) and
gradient/perturbation attribution (saliency, input x gradient, integrated gradients, leave-one-out; with Captum)
side by side, on attnlab's classifiers, the ViT and the Transformer encoder-decoder (and on foreign models, see
below), and measures how far to trust each: rank agreement, perturbation curves, uniform and permuted attention.

    from attnlab.pipeline import load_predictor
    from attnlab.explain import adapter_for, explain_batch

    adapter = adapter_for(load_predictor("runs/keywords"))
    examples = [adapter.example(t) for t in ["good film", "a dull plot"]]
    explanations, report = explain_batch(adapter, examples)
    print(report.table())

Models attnlab did not build are explained through ``attnlab.capture`` (:mod:`attnlab.explain.captured`):
:class:`CapturedClassifierAdapter` for any PyTorch or Hugging Face encoder text classifier (``nn.TransformerEncoder``
with pooling, ``BertForSequenceClassification``...), :class:`CapturedViTAdapter` for a Hugging Face ViT and
:class:`CapturedTranslationAdapter` for a Hugging Face encoder-decoder (``MarianMTModel``...)::

    import torch
    import transformers
    from attnlab.explain import CapturedClassifierAdapter, explain_batch

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32)
    adapter = CapturedClassifierAdapter(transformers.BertForSequenceClassification(config), remove_id=4,
                                        readout="cls")  # remove_id: [MASK]; IG from [PAD] = config.pad_token_id
    examples = [adapter.example_from_ids(torch.tensor([ids])) for ids in ([1, 7, 9, 2], [1, 5, 6, 8, 2])]
    explanations, report = explain_batch(adapter, examples, max_k=3)
    print(report.table())

Attention-only methods (:func:`attention_flow`, :func:`attention_methods`) also take maps captured from any model
(``attnlab.capture``, e.g. ``nn.TransformerEncoder``). Captum and scipy are imported lazily (the ``explain`` extra).
"""

from attnlab.explain.adapters import (
    ATTENTION_METHODS,
    Adapter,
    AttentionImportance,
    Example,
    RecurrentTranslationAdapter,
    TextClassifierAdapter,
    TranslationAdapter,
    ViTAdapter,
    adapter_for,
)
from attnlab.explain.attribution import ATTRIBUTION_METHODS, attribute
from attnlab.explain.captured import CapturedClassifierAdapter, CapturedTranslationAdapter, CapturedViTAdapter
from attnlab.explain.faithfulness import (
    attention_checks,
    perturbation_curves,
    rank_agreement,
    ranking,
)
from attnlab.explain.flow import attention_flow, flow_graph, fuse_layers
from attnlab.explain.inputs import split_examples
from attnlab.explain.overrides import override_attention, permuted_weights, uniform_weights
from attnlab.explain.page import explanation_html, write_explanation_html
from attnlab.explain.relevance import (
    attention_methods,
    encoder_decoder_relevance,
    gradient_rollout,
    gradient_weighted,
)
from attnlab.explain.report import METHODS, Explanation, FaithfulnessReport, explain, explain_batch

__all__ = [
    "ATTENTION_METHODS",
    "ATTRIBUTION_METHODS",
    "METHODS",
    "Adapter",
    "AttentionImportance",
    "CapturedClassifierAdapter",
    "CapturedTranslationAdapter",
    "CapturedViTAdapter",
    "Example",
    "Explanation",
    "FaithfulnessReport",
    "TextClassifierAdapter",
    "RecurrentTranslationAdapter",
    "TranslationAdapter",
    "ViTAdapter",
    "adapter_for",
    "attention_checks",
    "attention_flow",
    "attention_methods",
    "attribute",
    "encoder_decoder_relevance",
    "explain",
    "explain_batch",
    "explanation_html",
    "flow_graph",
    "fuse_layers",
    "gradient_rollout",
    "gradient_weighted",
    "override_attention",
    "perturbation_curves",
    "rank_agreement",
    "ranking",
    "split_examples",
    "uniform_weights",
    "permuted_weights",
    "write_explanation_html",
]
