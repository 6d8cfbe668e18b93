"""initialize_from: which tensors are copied, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.pipeline.init import initialize_from
from attnlab.train.checkpoint import Checkpoint


class _Net(nn.Module):
    def __init__(self, width: int, head: int) -> None:
        super().__init__()
        self.stem = nn.Linear(3, width)
        self.stem_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, head)


def _ckpt(model: nn.Module) -> Checkpoint:
    return Checkpoint(Path("src-run/best"), 7, {k: v.clone() for k, v in model.state_dict().items()}, None)


def _same(a: nn.Module, b: nn.Module, prefix: str) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items() if k.startswith(prefix))


def test_named_prefixes_are_copied_and_nothing_else() -> None:
    torch.manual_seed(0)
    src, dst = _Net(4, 2), _Net(4, 2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    copied = initialize_from(dst, _ckpt(src), ["stem"])
    assert sorted(copied) == ["stem.bias", "stem.weight"]  # "stem" is a module name, not a string prefix of "stem_norm"
    assert _same(src, dst, "stem.")
    for name in ("stem_norm.weight", "head.weight", "head.bias"):
        assert torch.equal(dst.state_dict()[name], before[name])


def test_without_prefixes_every_name_and_shape_match_is_copied() -> None:
    torch.manual_seed(0)
    src, dst = _Net(4, 2), _Net(4, 5)  # the head differs in shape: skipped, not an error
    copied = initialize_from(dst, _ckpt(src), [])
    assert set(copied) == {"stem.weight", "stem.bias", "stem_norm.weight", "stem_norm.bias"}
    assert _same(src, dst, "stem")


@pytest.mark.parametrize(("dst", "prefixes", "message"), [
    (_Net(8, 2), ["stem"], r"stem.weight is \(4, 3\) in the checkpoint but \(8, 3\) in this model"),
    (_Net(4, 2), ["trunk"], "'trunk' names no parameter of the model"),
    (nn.Linear(9, 9), [], "no parameter of this model has the name and shape"),
])
def test_refusals_name_the_problem(dst: nn.Module, prefixes: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        initialize_from(dst, _ckpt(_Net(4, 2)), prefixes)
