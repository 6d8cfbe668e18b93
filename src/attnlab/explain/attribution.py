"""Gradient and perturbation attribution over input tokens or image patches, with Captum.

Every method explains the log-probability of the explained output (the predicted class; for a translation each
generated token in turn, one row per decoding step) and gives one number per input position:

* ``saliency``: the L2 norm of the gradient with respect to the position's embedding (Simonyan et al. 2014;
  Li et al. 2016 for text), Captum's ``LayerGradientXActivation(multiply_by_inputs=False)``; unsigned;
* ``input_x_gradient``: embedding times gradient, summed over the embedding (Shrikumar et al. 2017),
  ``LayerGradientXActivation``; signed;
* ``integrated_gradients``: Sundararajan et al. (2017) from an all-``<pad>`` input (zero embeddings; an image's
  baseline is 0 in normalized space, the mean gray), ``LayerIntegratedGradients`` with ``ig_steps`` Gauss-Legendre
  steps, summed over the embedding; signed, and complete: the sum equals ``f(x) - f(baseline)`` up to the
  quadrature error;
* ``leave_one_out``: ``f(x) - f(x with the position removed)`` (a token -> ``<unk>``, a patch -> 0), Captum's
  ``FeatureAblation``; signed.

Rankings use the signed values (evidence *for* the output first), saliency its norm. For images the layer is
the patch embedding (one vector per patch), for translation the input of the source positional encoding.

Captum is imported when a method runs; without it the error names the ``explain`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from attnlab.core.errors import ConfigError
from attnlab.explain.adapters import Adapter, Example

ATTRIBUTION_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "leave_one_out")
"""Gradient and perturbation attributions, in the order tables list them."""


def captum_attr() -> Any:
    """``captum.attr``, or a one-line error naming the extra that installs it."""
    try:
        import captum.attr
    except ImportError:
        raise ConfigError("gradient attribution needs captum: pip install 'attnlab[explain]' "
                          "(captum>=0.7, scipy>=1.10)") from None
    return captum.attr


def _positions(layer_attr: torch.Tensor | tuple, reduce: str) -> torch.Tensor:
    """``(1, T, D)`` layer attribution -> ``(T,)``: the sum over ``D``, or the L2 norm."""
    a = layer_attr[0] if isinstance(layer_attr, tuple) else layer_attr
    a = a.detach().double()[0].cpu()  # (T, D)
    return a.norm(dim=-1) if reduce == "norm" else a.sum(-1)


def attribute(adapter: Adapter, example: Example, methods: Sequence[str] = ATTRIBUTION_METHODS, *,
              ig_steps: int = 32, internal_batch_size: int | None = 32) -> dict[str, torch.Tensor]:
    """Attributions of one example.

    Args:
        adapter: the model family's :class:`~attnlab.explain.adapters.Adapter`.
        example: from ``adapter.example(...)``.
        methods: any of :data:`ATTRIBUTION_METHODS`.
        ig_steps: integration steps of integrated gradients.
        internal_batch_size: rows per forward pass inside integrated gradients.

    Returns:
        method -> ``(T,)`` float64, or ``(Tt, Ts)`` for a translation (row ``t``: generated token ``t``).
    """
    unknown = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if unknown:
        raise ConfigError(f"unknown attribution method {unknown[0]!r:.40}; choose from "
                          f"{', '.join(ATTRIBUTION_METHODS)}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise ConfigError(f"ig_steps must be a positive integer, got {ig_steps!r:.40}")
    if not methods:
        return {}
    attr = captum_attr()
    model, layer, to_input = adapter.model, adapter.layer, adapter.to_layer_input
    forward = adapter.log_probs
    rows: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    with torch.enable_grad():
        for args, target in adapter.steps(example):
            kw = {"target": target, "additional_forward_args": args or None}
            if "saliency" in methods:
                grad = attr.LayerGradientXActivation(forward, layer, multiply_by_inputs=False)
                rows["saliency"].append(_positions(grad.attribute(example.inputs, attribute_to_layer_input=to_input,
                                                                  **kw), "norm"))
            if "input_x_gradient" in methods:
                ixg = attr.LayerGradientXActivation(forward, layer)
                rows["input_x_gradient"].append(_positions(ixg.attribute(example.inputs,
                                                                         attribute_to_layer_input=to_input, **kw),
                                                           "sum"))
            if "integrated_gradients" in methods:
                ig = attr.LayerIntegratedGradients(forward, layer)
                a = ig.attribute(example.inputs, baselines=adapter.ig_baseline(example), n_steps=ig_steps,
                                 internal_batch_size=internal_batch_size, attribute_to_layer_input=to_input, **kw)
                rows["integrated_gradients"].append(_positions(a, "sum"))
            if "leave_one_out" in methods:
                ablation = attr.FeatureAblation(forward)
                with torch.no_grad():
                    a = ablation.attribute(example.inputs, baselines=adapter.occlusion_baseline,
                                           feature_mask=adapter.feature_mask(example),
                                           perturbations_per_eval=min(64, example.num_positions), **kw)
                rows["leave_one_out"].append(adapter.positions_of(a.detach().double(), example))
    model.zero_grad(set_to_none=True)
    if adapter.kind == "translation":
        return {m: torch.stack(v) for m, v in rows.items()}  # (Tt, Ts)
    return {m: v[0] for m, v in rows.items()}  # (T,)
