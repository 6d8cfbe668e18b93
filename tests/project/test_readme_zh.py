"""The Chinese README stays as true as the English one: its commands and options exist, its code and output
are copied from README.md, its table numbers come from README.md, and the two files link to each other."""

from __future__ import annotations

import argparse
import io
import re
import tokenize
from collections.abc import Callable
from pathlib import Path

import pytest

from attnlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"
EN = README.read_text(encoding="utf-8")
ZH = README_ZH.read_text(encoding="utf-8")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
INLINE_COMMAND = re.compile(r"`(attnlab [^`\n]+)`")
COMMAND = re.compile(r"\battnlab[ \t]+([a-z][a-z0-9-]*)")
OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
# A number with a decimal point; not part of a version such as 2.6.0 or of a longer number.
DECIMAL = re.compile(r"(?<![\w.])\d+(?:,\d{3})*\.\d+(?!\.?\d)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return FENCE.findall(text)


def logical_lines(block: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    return block.replace("\\\n", " ").splitlines()


def split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)``: a line starting with ``#`` is all comment, else the comment starts at `` #``."""
    stripped = line.lstrip()
    if stripped.startswith("#"):
        return "", stripped
    code, sep, comment = line.partition(" #")
    return code.rstrip(), comment if sep else ""


def command_uses(text: str) -> list[tuple[list[str], list[str]]]:
    """``(command path, options)`` for every ``attnlab SUB ...`` in the shell/output code blocks and the inline
    code spans starting with ``attnlab``. Options in a comment without a command of its own belong to the
    command that precedes it in the block (``# the other rows: --set ...``)."""
    pieces = [body for lang, body in fenced_blocks(text) if lang != "python"]
    pieces += [span.replace("\\|", "/") for span in INLINE_COMMAND.findall(text)]
    uses: list[tuple[list[str], list[str]]] = []
    for piece in pieces:
        last: tuple[list[str], list[str]] | None = None
        for line in logical_lines(piece):
            code, comment = split_comment(line)
            for part, is_comment in ((code, False), (comment, True)):
                for segment in re.split(r"\||;|&&|`", part):
                    match = COMMAND.search(segment)
                    if match is None:
                        if is_comment and last is not None:
                            last[1].extend(OPTION.findall(segment))
                        elif segment.strip() and not is_comment:
                            last = None  # another program (pip, printf, output...): its options are not ours
                        continue
                    rest = segment[match.end():]
                    words = rest.split()
                    path = [match.group(1)] + [w for w in words[:1] if re.fullmatch(r"[a-z][a-z0-9-]*", w)]
                    last = (path, OPTION.findall(rest))
                    uses.append(last)
    return uses


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands ``parser --help`` lists, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest for a in action._choices_actions}
            return {name: sub for name, sub in action.choices.items() if name in listed}
    return {}


def resolve(path: list[str]) -> tuple[str, argparse.ArgumentParser]:
    """The parser of ``attnlab SUB [ACTION]``; fails when ``SUB`` is not a subcommand ``attnlab --help`` lists."""
    root = build_parser()
    commands = subparsers_of(root)
    name = path[0]
    assert name in commands and re.search(rf"^\s+{name}\s", root.format_help(), flags=re.M), (
        f"`attnlab {name}` is not a subcommand of `attnlab --help` ({', '.join(commands)})")
    parser = commands[name]
    actions = subparsers_of(parser)
    if actions and len(path) > 1 and path[1] in actions:
        return f"attnlab {name} {path[1]}", actions[path[1]]
    return f"attnlab {name}", parser


def check_commands(text: str) -> None:
    """Every ``attnlab SUB`` is a listed subcommand and every ``--option`` shown with it is in its ``--help``."""
    for path, options in command_uses(text):
        shown, parser = resolve(path)
        help_text = parser.format_help()
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
                f"`{shown} --help` has no {option}")


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.lstrip().startswith("|") and not re.fullmatch(r"[\s|:-]+", line)]


def check_table_numbers(zh: str, en: str) -> None:
    """Every decimal number of a Chinese table row is in README.md, and the numbers of one Chinese row all
    come from one English table row (copied, not moved between rows)."""
    en_numbers = set(DECIMAL.findall(en))
    en_rows = [set(DECIMAL.findall(row)) for row in table_rows(en)]
    for row in table_rows(zh):
        numbers = set(DECIMAL.findall(row))
        missing = sorted(numbers - en_numbers)
        assert not missing, f"{missing} of this table row are nowhere in README.md: {row}"
        assert not numbers or any(numbers <= en_row for en_row in en_rows), (
            f"no table row of README.md has all of {sorted(numbers)}: {row}")


def code_tokens(source: str) -> list[tuple[int, str]]:
    """A Python block as tokens, without comments and layout, so that only translated comments may differ."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    return [(tok.type, tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type not in skip]


def check_python_blocks(zh: str, en: str) -> None:
    zh_blocks = [body for lang, body in fenced_blocks(zh) if lang == "python"]
    en_blocks = [body for lang, body in fenced_blocks(en) if lang == "python"]
    assert len(zh_blocks) == len(en_blocks), f"{len(zh_blocks)} Python blocks, README.md has {len(en_blocks)}"
    for i, (ours, theirs) in enumerate(zip(zh_blocks, en_blocks, strict=True)):
        assert code_tokens(ours) == code_tokens(theirs), f"Python block {i + 1} differs from README.md beyond comments"


def check_verbatim(zh: str, en: str) -> None:
    """Every command and output line of a non-Python code block is a line of README.md (comments aside)."""
    en_lines = {split_comment(line)[0] for lang, body in fenced_blocks(en) if lang != "python"
                for line in body.splitlines()}
    for lang, body in fenced_blocks(zh):
        if lang == "python":
            continue
        for line in body.splitlines():
            code = split_comment(line)[0]
            assert not code.strip() or code in en_lines, f"not in any code block of README.md: {line!r}"


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def check_links(text: str, source: Path) -> None:
    """Relative links and images point at files that exist, and ``#anchors`` at headings of the target."""
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (source.parent / file).resolve() if file else source
        assert path.exists(), f"{source.name} links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"{source.name}: no heading for #{anchor}"


def check_cross_links(zh: str, en: str) -> None:
    """README.md links to README.zh-CN.md just below its title, and README.zh-CN.md back at its top."""
    assert en.splitlines()[0].startswith("# ") and "](README.zh-CN.md)" in en.splitlines()[1], (
        "README.md's second line must link to README.zh-CN.md")
    assert "](README.md)" in "\n".join(zh.splitlines()[:3]), "README.zh-CN.md must link to README.md at its top"


# (a) and (b)
def test_the_commands_and_options_of_the_chinese_readme_exist() -> None:
    uses = command_uses(ZH)
    missing = {path[0] for path, _ in command_uses(EN)} - {path[0] for path, _ in uses}
    assert not missing, f"README.md shows these subcommands, README.zh-CN.md does not: {sorted(missing)}"
    assert sum(len(options) for _, options in uses) > 50
    check_commands(ZH)


# (c)
def test_table_numbers_are_copied_from_the_english_readme() -> None:
    assert len([row for row in table_rows(ZH) if DECIMAL.search(row)]) > 40
    check_table_numbers(ZH, EN)


# (d)
def test_the_two_readmes_link_to_each_other() -> None:
    check_cross_links(ZH, EN)
    check_links(ZH, README_ZH)


def test_code_is_the_english_readmes_with_translated_comments() -> None:
    check_python_blocks(ZH, EN)
    check_verbatim(ZH, EN)


# Each check must be able to fail: one planted error per check.
@pytest.mark.parametrize(("check", "old", "new"), [
    (check_commands, "$ attnlab trace --d-model", "$ attnlab shape --d-model"),
    (check_commands, "--heads 8 --batch 64 --seq 10 --kv-seq 12", "--heads 8 --batch 64 --seq 10 --kv-len 12"),
    (check_commands, "attnlab evaluate --checkpoint runs/rt --baseline", "attnlab evaluate --checkpoint runs/rt --bow"),
    (check_commands, "--set model.bigram_buckets=20000", "--bigram-buckets 20000"),
    (check_commands, "`attnlab data fetch CORPUS [--dest DIR]`", "`attnlab data fetch CORPUS [--to DIR]`"),
    (check_table_numbers, "| 38.28 | 62.79 |", "| 38.29 | 62.79 |"),
    (check_table_numbers, "| 38.28 | 62.79 |", "| 62.79 | 38.28 |x| 90.36 |"),
    (check_cross_links, "[English](README.md)", "English"),
    (check_python_blocks, "num_heads=8, dropout=0.1)", "num_heads=8, dropout=0.2)"),
    (check_verbatim, "held-out accuracy (exact match, 991 dates", "held-out accuracy (exact match, 992 dates"),
])
def test_each_check_fails_on_a_planted_error(check: Callable[..., None], old: str, new: str) -> None:
    assert ZH.count(old) == 1, f"the plant needs {old!r} once in README.zh-CN.md"
    args = (ZH.replace(old, new), EN)
    if check is check_commands:
        args = args[:1]
    with pytest.raises(AssertionError):
        check(*args)


def test_the_english_link_check_fails_without_its_line() -> None:
    lines = EN.splitlines()
    with pytest.raises(AssertionError):
        check_cross_links(ZH, "\n".join(lines[:1] + lines[2:]))
    with pytest.raises(AssertionError):
        check_links(ZH.replace("(README.md#results)", "(README.md#no-such-section)", 1), README_ZH)
