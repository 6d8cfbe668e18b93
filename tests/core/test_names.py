"""One name per concept (see the "Names" paragraph of :mod:`attnlab.core.types`): the old names do not come back.

The check reads the source of ``src/attnlab`` with :mod:`ast` -- function arguments, class names and names bound
in code, never comments or docstrings -- so prose may still speak of "lengths".
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "attnlab"

# Arguments renamed everywhere: memory_lens -> src_lens (cross-attention source), num_hiddens -> hidden_size.
OLD_ARGUMENTS = {"memory_lens", "num_hiddens"}
# Seq2SeqOutput -> EncoderDecoderOutput; no alias may bind the old name either.
OLD_NAMES = {"Seq2SeqOutput"}
# Where a (B,) length tensor is called valid_lens (or src_lens / tgt_lens), a tensor argument or batch field
# called `lengths` is the old name. The data readers are left out: their `lengths` are plain Python statistics.
VALID_LENS_PACKAGES = ("attention", "core", "decode", "explain", "models", "tasks", "train", "viz")


def _arguments(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    a = node.args
    return [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x is not None)]


def old_names_in(package: Path) -> list[str]:
    """``path:line: what`` for every old name defined in the Python source under ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        lengths_banned = rel.parts[0] in VALID_LENS_PACKAGES
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                for arg in _arguments(node):
                    if arg.arg in OLD_ARGUMENTS or (lengths_banned and arg.arg == "lengths"):
                        found.append(f"{where}: argument {arg.arg!r}")
            elif isinstance(node, ast.ClassDef):
                if node.name in OLD_NAMES:
                    found.append(f"{where}: class {node.name}")
                for item in node.body:  # dataclass / NamedTuple fields
                    if lengths_banned and isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                            and item.target.id == "lengths":
                        found.append(f"{where}: field 'lengths' of {node.name}")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id in OLD_NAMES:
                found.append(f"{where}: name {node.id}")
            elif isinstance(node, ast.alias) and (node.asname or node.name.rsplit(".", 1)[-1]) in OLD_NAMES:
                found.append(f"{where}: import of {node.asname or node.name}")
    return found


def test_the_package_source_is_there() -> None:
    assert (PACKAGE / "core" / "types.py").is_file()
    assert (PACKAGE / "models" / "base.py").is_file()


def test_old_names_do_not_come_back() -> None:
    assert old_names_in(PACKAGE) == []


def test_the_check_sees_old_names(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "models" / "old.py").write_text(
        "import torch\n"
        "from x import Seq2SeqOutput\n"
        "class Seq2SeqOutput: ...\n"
        "class LabelBatch:\n"
        "    lengths: torch.Tensor\n"
        "def forward(x, memory_lens=None, *, num_hiddens=1): ...\n"
        "def encode(inputs, lengths: torch.Tensor): ...\n"
        "# lengths, memory_lens and num_hiddens in a comment are fine\n",
        encoding="utf-8")
    (tmp_path / "data" / "reader.py").write_text("def stats(lengths: list[int]): ...\n", encoding="utf-8")
    found = old_names_in(tmp_path)
    assert len(found) == 6, found
    assert not any(f.startswith("data") for f in found)
