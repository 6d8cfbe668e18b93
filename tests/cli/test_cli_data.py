"""``attnlab data`` and ``attnlab evaluate`` end to end through the CLI entry point (exit codes, output)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import attnlab.cli as cli
import attnlab.cli.data as cli_data
from attnlab.core.errors import ExitCode
from attnlab.data import download

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_http import serve  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="../shared/data not present")


@pytest.fixture(autouse=True)
def only_these_commands(monkeypatch):
    """Build the parser from the commands under test only (other subcommands are tested on their own)."""
    monkeypatch.setattr(cli, "COMMANDS", ("data", "evaluate"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_shared
def test_fetch_then_cached(capsys, tmp_path):
    with serve(SHARED) as server:
        code, out, _ = run(capsys, "data", "fetch", "multi30k", "--dest", str(tmp_path), "--mirror", server.url,
                           "--no-progress")
        assert code == 0 and "multi30k: 9 downloaded, 0 already present" in out
        code, out, _ = run(capsys, "data", "fetch", "multi30k", "--dest", str(tmp_path), "--mirror", server.url)
        assert code == 0 and "0 downloaded, 9 already present" in out
        assert len(server.requests) == 9


def test_fetch_server_error_exit_code(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as server:
        code, _, err = run(capsys, "data", "fetch", "tatoeba-cmn", "--dest", str(tmp_path / "d"), "--mirror",
                           server.url, "--no-progress")
    assert code == ExitCode.DATA
    assert "attnlab data: error: download of" in err and "HTTP 404" in err
    assert not any((tmp_path / "d").rglob("*.*"))


@pytest.fixture
def tatoeba_site(tmp_path) -> Path:
    site = tmp_path / "site"
    (site / "tatoeba").mkdir(parents=True)
    (site / "tatoeba" / "cmn.txt").write_text("Hi.\t嗨。\tCC-BY 2.0 (France)\n" * 200, encoding="utf-8")
    return site


def test_fetch_help_documents_the_limits(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["data", "fetch", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 0
    assert "--deadline SECONDS" in out and "--min-rate BYTES_PER_S" in out and "--timeout SECONDS" in out
    assert f"default {download.DEFAULT_DEADLINE:g}" in out and f"default {download.DEFAULT_MIN_RATE:g}" in out


def test_fetch_limit_flags_reach_the_library(capsys, tmp_path, monkeypatch):
    seen: dict[str, object] = {}

    def fake_fetch(name, dest, **kwargs):
        seen.update(kwargs)
        return download.FetchResult(dest=tmp_path, downloaded=(), cached=())

    monkeypatch.setattr(cli_data, "fetch_corpus", fake_fetch)
    assert run(capsys, "data", "fetch", "multi30k", "--no-progress")[0] == 0
    assert (seen["deadline"], seen["min_rate"]) == (download.DEFAULT_DEADLINE, download.DEFAULT_MIN_RATE)
    assert run(capsys, "data", "fetch", "multi30k", "--deadline", "0", "--min-rate", "5", "--timeout", "2")[0] == 0
    assert (seen["deadline"], seen["min_rate"], seen["timeout"]) == (None, 5.0, 2.0)  # 0: no deadline


@pytest.mark.timeout(20)
def test_fetch_deadline_is_a_one_line_data_error(capsys, tmp_path, tatoeba_site):
    with serve(tatoeba_site) as server:
        server.faults["tatoeba/cmn.txt"] = "trickle"
        code, _, err = run(capsys, "data", "fetch", "tatoeba-cmn", "--dest", str(tmp_path / "d"), "--mirror",
                           server.url, "--no-progress", "--deadline", "0.8")
    assert code == ExitCode.DATA
    (line,) = err.splitlines()
    assert line.startswith(f"attnlab data: error: download of {server.url}/tatoeba/cmn.txt stopped after ")
    assert "deadline of 0.8 s" in line and "--deadline SECONDS" in line
    assert not [p for p in (tmp_path / "d").rglob("*") if p.is_file()]


@pytest.mark.timeout(60)
def test_fetch_sigterm_leaves_no_partial_file(tmp_path, tatoeba_site):
    dest = tmp_path / "d"
    with serve(tatoeba_site) as server:
        server.faults["tatoeba/cmn.txt"] = "trickle"
        proc = subprocess.Popen([sys.executable, "-m", "attnlab.cli", "data", "fetch", "tatoeba-cmn", "--dest",
                                 str(dest), "--mirror", server.url, "--no-progress"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            end = time.monotonic() + 30
            while not list(dest.rglob(".*.part")):
                assert time.monotonic() < end and proc.poll() is None, "no download started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == ExitCode.TERMINATED, err
    assert "attnlab data: terminated (SIGTERM)" in err
    assert not [p for p in dest.rglob("*") if p.is_file()]


@needs_shared
def test_stats_multi30k(capsys):
    code, out, _ = run(capsys, "data", "stats", "multi30k", "--data-dir", str(SHARED))
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows["train.de"] == "29000" and rows["val.fr"] == "1014" and rows["test_2016_flickr.en"] == "1000"


def test_stats_missing_corpus_says_how_to_fetch(capsys, tmp_path):
    code, _, err = run(capsys, "data", "stats", "tatoeba-cmn", "--data-dir", str(tmp_path))
    assert code == ExitCode.DATA and "attnlab data fetch tatoeba-cmn" in err


@needs_shared
def test_split_written_then_verified(capsys, tmp_path):
    out_file = tmp_path / "split.json"
    code, out, _ = run(capsys, "data", "split", "tatoeba-cmn", "--out", str(out_file), "--data-dir", str(SHARED))
    assert code == 0 and out.startswith("wrote") and "train 27155, valid 1000, test 1000" in out
    code, out, _ = run(capsys, "data", "split", "tatoeba-cmn", "--out", str(out_file), "--data-dir", str(SHARED))
    assert code == 0 and out.startswith("verified")
    code, _, err = run(capsys, "data", "split", "tatoeba-cmn", "--out", str(out_file), "--data-dir", str(SHARED),
                       "--seed", "7")
    assert code == ExitCode.DATA and "not the requested seed 7" in err


# ----------------------------------------------------------------------------------------------- evaluate


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


REFS = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch."]
HYPS = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest eine Zeitung."]


def test_evaluate_hyp_prints_scores_and_signatures(capsys, tmp_path):
    hyp, ref = write_lines(tmp_path / "hyp", HYPS), write_lines(tmp_path / "ref", REFS)
    code, out, _ = run(capsys, "evaluate", "--hyp", str(hyp), "--ref", str(ref))
    assert code == 0
    assert out.startswith("BLEU = ") and "signature: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    assert "chrF2 = " in out and "signature: nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:" in out
    code, out, _ = run(capsys, "evaluate", "--hyp", str(hyp), "--ref", str(ref), "--json")
    data = json.loads(out)
    assert code == 0 and data["num_sentences"] == 3 and 0 < data["bleu"]["score"] < 100


def test_evaluate_chinese(capsys, tmp_path):
    hyp = write_lines(tmp_path / "hyp.zh", ["我很高兴见到你。"])
    ref = write_lines(tmp_path / "ref.zh", ["我很高兴看到你。"])
    code, out, _ = run(capsys, "evaluate", "--hyp", str(hyp), "--ref", str(ref), "--tgt-lang", "zh")
    assert code == 0 and "tok:zh" in out


def test_evaluate_count_mismatch_exit_code(capsys, tmp_path):
    hyp, ref = write_lines(tmp_path / "hyp", HYPS), write_lines(tmp_path / "ref", REFS[:2])
    code, _, err = run(capsys, "evaluate", "--hyp", str(hyp), "--ref", str(ref))
    assert code == ExitCode.DATA and "has 3 lines but" in err and "has 2" in err


def test_evaluate_needs_one_mode(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "--ref", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "one of the arguments --hyp --checkpoint is required" in capsys.readouterr().err


def test_evaluate_checkpoint_errors(capsys, tmp_path):
    ref = write_lines(tmp_path / "ref", REFS)
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "nope"), "--src", str(ref), "--ref", str(ref))
    assert code == ExitCode.CHECKPOINT and "no such checkpoint directory" in err
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path), "--ref", str(ref))
    assert code == ExitCode.USAGE and "--checkpoint needs --src" in err
