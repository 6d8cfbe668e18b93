"""``attnlab viz`` on several texts (``--text`` repeated, ``--input FILE``): one page lists them all, figures are
numbered, and the number of texts is bounded. Uses the tiny dates run of conftest (a character-level seq2seq)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import run_cli

from attnlab.cli.viz import MAX_TEXTS

DATES = ["Nov 21, 2026", "1 JAN 2000", "21/11/26"]


def _data(page: Path) -> dict:
    m = re.search(r'id="attnlab-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    assert m is not None
    return json.loads(m.group(1))


def _source(view: dict) -> str:
    return "".join(view["keyTokens"]).replace("\u2423", " ")


def test_several_texts_go_into_one_page(dates_run: Path, tmp_path: Path) -> None:
    texts = [*DATES, "<img src=x onerror=alert(1)>"]
    res = run_cli(["viz", "--checkpoint", str(dates_run), *[a for t in texts for a in ("--text", t)],
                   "--max-new-tokens", "6", "--png", str(tmp_path / "a.png"), "--html", str(tmp_path / "v.html")])
    assert res.rc == 0, res.err
    page = tmp_path / "v.html"
    assert "<img" not in page.read_text(encoding="utf-8")
    data = _data(page)
    assert [e["name"] for e in data["examples"]] == texts
    assert [v["example"] for v in data["views"]] == [0, 1, 2, 3] and {v["kind"] for v in data["views"]} == {"cross"}
    assert [_source(v) for v in data["views"][:3]] == DATES
    for i, (text, example) in enumerate(zip(texts, data["examples"], strict=True), start=1):
        assert isinstance(example["prediction"], str)  # the translation, as printed
        assert re.search(rf"^ +{i}\. {re.escape(text)} +-> {re.escape(example['prediction'])}$", res.out, re.M)
        assert (tmp_path / f"a-{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "a.png").exists()
    assert f"wrote {page} (4 examples)" in res.out


def test_input_file_of_lines_and_stdin(dates_run: Path, tmp_path: Path) -> None:
    lines = tmp_path / "dates.txt"
    lines.write_text(f"{DATES[0]}\n\n   {DATES[1]}  \n", encoding="utf-8")
    res = run_cli(["viz", "--checkpoint", str(dates_run), "--input", str(lines), "--max-new-tokens", "4",
                   "--html", str(tmp_path / "f.html")])
    assert res.rc == 0, res.err
    assert [e["name"] for e in _data(tmp_path / "f.html")["examples"]] == DATES[:2]  # blank lines skipped, stripped
    res = run_cli(["viz", "--checkpoint", str(dates_run), "--input", "-", "--max-new-tokens", "4",
                   "--html", str(tmp_path / "s.html")], stdin="\n".join(DATES).encode())
    assert res.rc == 0, res.err
    assert [_source(v) for v in _data(tmp_path / "s.html")["views"]] == DATES


def test_one_text_is_one_example_as_before(dates_run: Path, tmp_path: Path) -> None:
    res = run_cli(["viz", "--checkpoint", str(dates_run), "--text", DATES[0], "--max-new-tokens", "4",
                   "--html", str(tmp_path / "one.html"), "--png", str(tmp_path / "one.png")])
    assert res.rc == 0, res.err
    data = _data(tmp_path / "one.html")
    assert data["examples"] == [{"name": None, "prediction": None}]
    assert data["title"].startswith(f"{DATES[0]} \N{RIGHTWARDS ARROW} ")
    assert (tmp_path / "one.png").is_file() and "translation: " in res.out


@pytest.mark.parametrize(("content", "code", "message"), [
    ("Nov 21, 2026\n" * (MAX_TEXTS + 1), 2, f"{MAX_TEXTS + 1} texts: one run draws at most {MAX_TEXTS}"),
    ("\n  \n", 3, "holds no text"),
    (None, 3, "cannot read --input"),
])
def test_bad_input_files_fail_before_writing(dates_run: Path, tmp_path: Path, content: str | None, code: int,
                                             message: str) -> None:
    source = tmp_path / "in.txt"
    if content is not None:
        source.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    res = run_cli(["viz", "--checkpoint", str(dates_run), "--input", str(source), "--html", str(out / "v.html")])
    assert res.rc == code and message in res.err and len(res.error_lines()) == 1
    assert not out.exists()


def test_text_and_input_exclude_each_other(dates_run: Path, tmp_path: Path) -> None:
    res = run_cli(["viz", "--checkpoint", str(dates_run), "--text", "x", "--input", str(tmp_path / "a.txt"),
                   "--html", str(tmp_path / "v.html")])
    assert res.rc == 2 and "not allowed with argument" in res.err
