"""``attnlab explain-head``: the built-in example with no data, the page, one-line usage errors, and a trained
Transformer checkpoint whose explained numbers are the model's own (weights it returns, outputs a hook sees)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from torch.testing import assert_close

TEXT = "Nov 21, 2026"


def _data(page: Path) -> dict:
    m = re.search(r'id="attnlab-explain-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_runs_with_no_arguments_reproducibly_without_touching_the_global_rng() -> None:
    state = torch.get_rng_state()
    res = run_cli(["explain-head"])
    assert res.rc == 0, res.err
    assert torch.equal(torch.get_rng_state(), state)
    out = res.out
    assert "built-in example: MultiHeadAttention(d_model=8, num_heads=2)" in out
    assert "queries: 0:the  1:cat  2:sat  3:on  4:the  5:mat  6:." in out
    assert "head 0 of 2, query 0 'the'" in out
    for shape in ("(D,) = (8,)", "(Dh,) = (4,)", "(Tk, Dh) = (7, 4)", "(B, H, Tq, Tk) = (1, 2, 7, 7)"):
        assert shape in out, shape
    diff = float(re.search(r"largest difference from the module's forward: (\S+)", out).group(1))
    assert diff < 1e-5
    assert run_cli(["explain-head"]).out == out  # seeded: the same numbers every run


def test_html_page_and_query_by_token(tmp_path: Path) -> None:
    page = tmp_path / "out" / "head.html"
    res = run_cli(["explain-head", "--query", "cat", "--head", "1", "--causal", "--html", str(page)])
    assert res.rc == 0, res.err
    assert "head 1 of 2, query 1 'cat'" in res.out and f"wrote {page}" in res.out
    data = _data(page)
    assert (data["head"], data["query"], data["maskKinds"]) == (1, 1, ["causal"])
    assert data["queryTokens"] == ["the", "cat", "sat", "on", "the", "mat", "."]
    allowed = data["heads"][1]["allowed"]
    assert allowed[1] == [True, True, False, False, False, False, False]  # "cat" sees "the" and itself
    assert data["heads"][1]["weights"][1][2:] == [0.0] * 5


@pytest.mark.parametrize(("argv", "message"), [
    (["--head", "2"], "--head 2 is out of range: there are 2 heads (0..1)"),
    (["--query", "7"], "--query 7 is out of range"),
    (["--query", "dog"], "--query 'dog' is neither a position nor one of the query tokens"),
    (["--layer", "1"], "--layer 1 is out of range"),
    (["--kind", "cross"], "--kind needs --checkpoint"),
    (["--html", "page.txt"], "--html expects a file name ending in .html"),
    (["--text", "  "], "--text is empty"),
    (["--decimals", "12"], "--decimals must be in 0..8"),
    (["--checkpoint", "some/run"], "--checkpoint needs --text"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    res = run_cli(["explain-head", *[str(tmp_path / a) if a.endswith(".txt") else a for a in argv]])
    assert res.rc == 2
    assert res.err.startswith("attnlab explain-head: error:") and res.err.count("\n") == 1
    assert message in res.err and res.out == ""
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step Transformer run on synthetic dates: random-ish weights, but a real attnlab checkpoint."""
    from attnlab.core.run_config import RunConfig
    from attnlab.pipeline import train_run

    cfg = RunConfig.from_dict({"data": {"source": "task", "task": "dates", "num_train": 200, "num_valid": 10,
                                        "num_test": 10},
                               "model": {"kind": "transformer", "d_model": 16, "num_heads": 2, "ffn_dim": 32,
                                         "encoder_layers": 2, "decoder_layers": 1, "max_len": 64},
                               "train": {"max_steps": 2, "eval_every": 2, "save_every": 2},
                               "decode": {"eval_sentences": 5}})
    out = tmp_path_factory.mktemp("explain") / "run"
    train_run(cfg, out, progress=False)
    return out


def _outputs_of(module: torch.nn.Module, run) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: outputs.append(out.output))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return outputs


def test_checkpoint_encoder_head_is_the_models_own(transformer_run: Path, tmp_path: Path) -> None:
    from attnlab.data.vocab import BOS_ID
    from attnlab.pipeline import load_predictor

    page = tmp_path / "enc.html"
    res = run_cli(["explain-head", "--checkpoint", str(transformer_run), "--text", TEXT, "--layer", "-1",
                   "--head", "1", "--query", "2", "--html", str(page)])
    assert res.rc == 0, res.err
    assert "encoder self-attention, layer 1" in res.out and "head 1 of 2, query 2" in res.out
    translator = load_predictor(transformer_run)
    model, text = translator.model, translator.text
    tokens = text.src_tokenizer.tokenize(TEXT)
    src, lens = torch.tensor([text.src_vocab.encode(tokens)]), torch.tensor([len(tokens)])
    result: list = []
    outputs = _outputs_of(model.encoder_layers[1].self_attn,
                          lambda: result.append(model(src, lens, torch.tensor([[BOS_ID]]), need_weights=True)))
    weights = result[0].attention.encoder_self[1, 0]  # (H, Ts, Ts)
    data = _data(page)
    assert data["queryTokens"] == tokens == data["keyTokens"]
    for h in range(2):
        assert_close(torch.tensor(data["heads"][h]["weights"]), weights[h])
    assert_close(torch.tensor(data["output"]), outputs[0][0])
    assert f"{float(weights[1, 2, 0]):.3f}" in res.out  # the printed table shows the model's weight


def test_checkpoint_cross_attention_is_the_models_own(transformer_run: Path, tmp_path: Path) -> None:
    from attnlab.pipeline import load_predictor

    page = tmp_path / "cross.html"
    res = run_cli(["explain-head", "--checkpoint", str(transformer_run), "--text", TEXT, "--kind", "cross",
                   "--max-new-tokens", "5", "--html", str(page)])
    assert res.rc == 0, res.err
    assert "cross-attention, layer 0" in res.out and "keys:    0:" in res.out
    translator = load_predictor(transformer_run)
    model, text = translator.model, translator.text
    data = _data(page)
    src_tokens = text.src_tokenizer.tokenize(TEXT)
    assert data["keyTokens"] == src_tokens and data["queryTokens"][0] == "<bos>" and not data["isSelf"]
    assert 1 <= len(data["queryTokens"]) <= 5
    src, lens = torch.tensor([text.src_vocab.encode(src_tokens)]), torch.tensor([len(src_tokens)])
    tgt = torch.tensor([text.tgt_vocab.encode(data["queryTokens"])])
    result: list = []
    outputs = _outputs_of(model.decoder_layers[0].cross_attn,
                          lambda: result.append(model(src, lens, tgt, need_weights=True)))
    for h in range(2):
        assert_close(torch.tensor(data["heads"][h]["weights"]), result[0].attention.cross[0, 0, h])
    assert_close(torch.tensor(data["output"]), outputs[0][0])


def test_checkpoint_bad_layer_head_and_missing_directory(transformer_run: Path, tmp_path: Path) -> None:
    for argv, message in ((["--layer", "2"], "--layer 2 is out of range: there are 2 encoder layers"),
                          (["--kind", "decoder", "--layer", "1"], "there is 1 decoder layer (0..0)"),
                          (["--head", "-3"], "--head -3 is out of range")):
        res = run_cli(["explain-head", "--checkpoint", str(transformer_run), "--text", TEXT, *argv])
        lines = res.error_lines()
        assert res.rc == 2 and len(lines) == 1 and lines[0].startswith("attnlab explain-head: error:")
        assert message in res.err and "Traceback" not in res.err
    res = run_cli(["explain-head", "--checkpoint", str(tmp_path / "nope"), "--text", TEXT])
    assert res.rc == 4 and len(res.error_lines()) == 1 and "no such checkpoint directory" in res.err
