"""``attnlab translate`` and ``attnlab evaluate --checkpoint`` on a trained run; missing, broken, foreign input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli

from attnlab.pipeline import load_translator

SOURCES = ["Nov 21, 2026", "", "1 jan 2000", "saturday 21 nov 2026"]
STDIN = "".join(s + "\n" for s in SOURCES).encode("utf-8")


def _expected(run: Path, beam: int) -> list[str]:
    return [t.text for t in load_translator(run / "best").translate(SOURCES, beam_size=beam)]


def test_stdin_to_stdout_one_line_per_input_line(dates_run: Path) -> None:
    res = run_cli(["translate", "--checkpoint", str(dates_run / "best")], stdin=STDIN)
    assert res.rc == 0, res.err
    assert res.out.endswith("\n") and res.out.split("\n")[:-1] == _expected(dates_run, beam=1)
    assert res.out.split("\n")[1] == ""  # the empty line stays an (empty) line


def test_input_and_output_files_and_the_run_directory_itself(dates_run: Path, tmp_path: Path) -> None:
    src, hyp = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(STDIN)
    res = run_cli(["translate", "--checkpoint", str(dates_run), "--input", str(src), "--output", str(hyp)])
    assert res.rc == 0, res.err
    assert res.out == ""
    assert hyp.read_text(encoding="utf-8").split("\n")[:-1] == _expected(dates_run, beam=1)


def test_beam_and_n_best(dates_run: Path) -> None:
    res = run_cli(["translate", "--checkpoint", str(dates_run / "best"), "--beam", "3"], stdin=STDIN)
    assert res.rc == 0, res.err
    assert res.out.split("\n")[:-1] == _expected(dates_run, beam=3)

    res = run_cli(["translate", "--checkpoint", str(dates_run / "best"), "--beam", "3", "--n-best", "2"], stdin=STDIN)
    assert res.rc == 0, res.err
    lines = res.out.split("\n")[:-1]
    assert len(lines) == len(SOURCES)
    assert all(len(line.split("\t")) == 2 for line in lines), lines  # K columns, the empty source included
    translator = load_translator(dates_run / "best")
    assert [line.split("\t")[0] for line in lines] == _expected(dates_run, beam=3)
    second = [translator.text.tgt_tokenizer.detokenize(translator.text.tgt_vocab.decode(r.hypotheses[1].tokens))
              for r in translator.translate(SOURCES, beam_size=3, n_best=2) if r.hypotheses]
    assert [line.split("\t")[1] for line, s in zip(lines, SOURCES, strict=True) if s] == second

    res = run_cli(["translate", "--checkpoint", str(dates_run / "best"), "--n-best", "2"], stdin=STDIN)
    assert res.rc == 2 and "--beam" in res.err


def test_early_stopping_and_length_penalty_flags_reach_beam_search(dates_run: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import attnlab.decode.translate as translate_module

    seen: list[tuple[bool, float]] = []
    real = translate_module.beam_search

    def spy(*args, **kwargs):
        seen.append((kwargs["early_stopping"], kwargs["length_penalty"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(translate_module, "beam_search", spy)
    saved = load_translator(dates_run / "best").config.decode.length_penalty
    for flags, expected in (([], (False, saved)), (["--early-stopping"], (True, saved)),
                            (["--length-penalty", "0.6"], (False, 0.6)), (["--length-penalty", "0"], (False, 0.0))):
        seen.clear()
        res = run_cli(["translate", "--checkpoint", str(dates_run / "best"), "--beam", "3", *flags], stdin=STDIN)
        assert res.rc == 0, res.err
        assert seen and set(seen) == {expected}
        assert len(res.out.split("\n")[:-1]) == len(SOURCES)
    src = tmp_path / "sources.txt"
    src.write_text("".join(s + "\n" for s in SOURCES), encoding="utf-8")
    seen.clear()
    res = run_cli(["evaluate", "--checkpoint", str(dates_run / "best"), "--src", str(src), "--ref", str(src),
                   "--beam", "2", "--length-penalty", "0.25"])
    assert res.rc == 0 and seen and set(seen) == {(False, 0.25)}, res.err


@pytest.mark.parametrize("value", ["-0.5", "nan", "11", "x" * 500])
def test_a_bad_length_penalty_is_one_line_exit_2(dates_run: Path, value: str) -> None:
    for command in (["translate"], ["evaluate", "--split", "valid"]):
        res = run_cli([*command, "--checkpoint", str(dates_run / "best"), "--length-penalty", value], stdin=STDIN)
        assert res.rc == 2 and "--length-penalty" in res.err, res.err
        assert "expected a number from 0 to 10" in res.err or "expected a number, got" in res.err
        assert len(res.error_lines()) == 1 and len(res.error_lines()[0]) < 200 and "x" * 50 not in res.err
        assert not res.out


def test_invalid_utf8_exits_3_naming_the_line(dates_run: Path, tmp_path: Path) -> None:
    hyp = tmp_path / "out.txt"
    res = run_cli(["translate", "--checkpoint", str(dates_run / "best"), "--output", str(hyp)],
                  stdin=b"Nov 21, 2026\n1 jan 2000\n3 m\xe4rz 1999\n")
    assert res.rc == 3 and len(res.error_lines()) == 1 and "line 3" in res.error_lines()[0], res.err
    assert not hyp.exists()


def _corrupt(run: Path, tmp_path: Path, how: str) -> Path:
    if how == "missing":
        return tmp_path / "no-such-run" / "best"
    if how == "empty dir":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if how == "foreign meta.json":
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "meta.json").write_text(json.dumps({"name": "something else", "step": 3}))
        return tmp_path / "foreign"
    ckpt = tmp_path / "best"
    shutil.copytree(run / "best", ckpt)
    model = ckpt / "model.safetensors"
    data = model.read_bytes()
    if how == "truncated weights":
        model.write_bytes(data[: len(data) // 2])
    elif how == "corrupt weights header":
        model.write_bytes(data[:8] + b"\xff" * 16 + data[24:])
    elif how == "not json meta":
        (ckpt / "meta.json").write_text("{\"format\": ")
    elif how == "no vocabulary":
        (ckpt / "extra.json").write_text("{}\n")
        meta = json.loads((ckpt / "meta.json").read_text())
        meta["files"]["extra.json"] = 3
        (ckpt / "meta.json").write_text(json.dumps(meta))
    return ckpt


@pytest.mark.parametrize("how", ["missing", "empty dir", "foreign meta.json", "truncated weights",
                                 "corrupt weights header", "not json meta", "no vocabulary"])
def test_bad_checkpoints_exit_4_with_one_line(dates_run: Path, tmp_path: Path, how: str) -> None:
    ckpt = _corrupt(dates_run, tmp_path, how)
    res = run_cli(["translate", "--checkpoint", str(ckpt)], stdin=STDIN)
    assert res.rc == 4, res.err
    assert res.out == "" and "Traceback" not in res.err
    assert len(res.error_lines()) == 1 and str(ckpt) in res.error_lines()[0]
    assert len(res.err.strip().splitlines()) == 1


def test_evaluate_prints_bleu_and_chrf_with_signatures(dates_run: Path, tmp_path: Path) -> None:
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    sources = [s for s in SOURCES if s]
    src.write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    own = [t.text for t in load_translator(dates_run / "best").translate(sources, beam_size=1)]
    ref.write_text("".join(s + "\n" for s in own), encoding="utf-8")  # its own output: chrF is 100
    res = run_cli(["evaluate", "--checkpoint", str(dates_run / "best"), "--src", str(src), "--ref", str(ref),
                   "--beam", "1"])
    assert res.rc == 0, res.err
    assert re.search(r"^BLEU = \d+\.\d\d ", res.out, re.M)
    assert re.search(r"^chrF2 = 100\.00", res.out, re.M), res.out
    assert re.search(r"signature: nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:", res.out)
    assert re.search(r"signature: nrefs:1\|case:mixed\|eff:yes\|nc:6\|nw:0\|space:no\|version:", res.out)

    ref.write_text("".join(s + "\n" for s in own[:-1]), encoding="utf-8")
    res = run_cli(["evaluate", "--checkpoint", str(dates_run / "best"), "--src", str(src), "--ref", str(ref),
                   "--beam", "1"])
    assert res.rc == 3 and len(res.error_lines()) == 1 and str(ref) in res.error_lines()[0], res.err
    assert "BLEU" not in res.out

    res = run_cli(["evaluate", "--checkpoint", str(tmp_path / "nothing"), "--src", str(src), "--ref", str(ref)])
    assert res.rc == 4


def test_overlong_input_is_cut_and_said_once(dates_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A source over data.max_len tokens is read up to it, and a warning says how many were cut (one line)."""
    long = "1" * 150  # 150 characters > the run's data.max_len of 100 character tokens
    with caplog.at_level("WARNING"):
        res = run_cli(["translate", "--checkpoint", str(dates_run)], stdin=f"{long}\n{long}\n1 May 2000\n".encode())
    assert res.rc == 0, res.err
    assert len(res.out.splitlines()) == 3
    warnings = [r.getMessage() for r in caplog.records if "longer than the model's" in r.getMessage()]
    assert warnings == ["2 of 3 inputs are longer than the model's 100 source tokens; only their first 100 are read"]


def test_a_checkpoint_with_nan_weights_is_refused(dates_run: Path, tmp_path: Path) -> None:
    """All-NaN weights used to translate every line to "" with exit 0; now the checkpoint is refused (exit 4)."""
    import torch

    from attnlab.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(dates_run / "best")
    model = load_translator(dates_run).model
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(tmp_path / "nan", model=model, step=ckpt.step, config=ckpt.config, extra=ckpt.extra)
    res = run_cli(["translate", "--checkpoint", str(tmp_path / "nan")], stdin=b"1 May 2000\n")
    assert res.rc == 4 and len(res.error_lines()) == 1, res.err
    assert "NaN/inf" in res.err and res.out == ""
