"""Compiled kernels for inference: one-query attention, greedy's choice of token and its bookkeeping, beam search's
candidates, and whole Transformer layers (a decoder layer's decoding step, an encoder layer); and for training, the
label-smoothed cross-entropy of rows of logits with its gradient.

At decoding shapes -- one new query per row, a few dozen keys, 32-64 dimensions per head -- PyTorch's attention
kernel costs 100-700 µs a call, most of it overhead per (row, head), and greedy decoding's log-softmax plus arg-max
(beam search's log-softmax, plus scores, plus top-k) reads and writes the whole ``(rows, vocabulary)`` logits
several times. A decoder layer's step at a few dozen rows is a dozen operators whose dispatch, bias copies and views
cost more than their arithmetic. ``kernels.c`` (next to this file) does the same arithmetic in float32 in plain loops
that the C compiler vectorizes; the layers' matrix products go to the BLAS that PyTorch itself calls (its ``sgemm_``,
looked up in PyTorch's libraries at load; where it is not exported, the layers keep PyTorch's path).

The kernels are built on first use with the system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) and
kept in ``$ATTNLAB_CACHE_DIR`` (default ``$XDG_CACHE_HOME/attnlab``, i.e. ``~/.cache/attnlab``) under ``native/``,
named by a hash of the source, the flags, the compiler and the CPU, so a change of any of them builds again.
Without a compiler, or with ``ATTNLAB_NATIVE=0`` (or ``false``, ``no``, ``off``), every caller keeps PyTorch's
kernels: the functions here return ``None`` and :func:`status` says why. The results equal PyTorch's within float32
rounding (``tests/attention/test_native.py``, ``tests/attention/test_native_layers.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch

from attnlab.attention.cache import KVCache

__all__ = ["available", "status", "one_query_attention", "greedy_pick", "greedy_record", "beam_topk",
           "decoder_layer_step", "encoder_layer", "cross_entropy_rows", "cache_dir"]

SOURCE = Path(__file__).with_name("kernels.c")
try:  # read once, with this module: a library built later (at first use) then always matches the wrappers below,
    _SOURCE_TEXT: str | None = SOURCE.read_text()  # even if the installed files change while a process runs
except OSError:
    _SOURCE_TEXT = None
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno")
NATIVE_FLAGS = ("-march=native",)  # dropped when the compiler refuses it

_I64, _PTR, _F32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
_state: dict[str, object] = {}  # "lib": the loaded library or None, "status": why


def cache_dir() -> Path:
    """``$ATTNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/attnlab``, else ``~/.cache/attnlab``."""
    env = os.environ.get("ATTNLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnlab"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def _cpu_signature() -> str:
    """The CPU's model and feature flags (``-march=native`` builds for them), or the machine type."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.machine() + platform.processor()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n".join(sorted(set(lines)))


def _build(cc: str, out: Path, source: str) -> None:
    """Compile ``source`` (the text of ``kernels.c``) into ``out`` (atomically), with ``-march=native`` when the
    compiler takes it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    fd, c_file = tempfile.mkstemp(suffix=".c", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        f.write(source)
    try:
        for extra in (NATIVE_FLAGS, ()):
            result = subprocess.run([cc, *FLAGS, *extra, "-o", tmp, c_file, "-lm"], capture_output=True,
                                    text=True, timeout=120)
            if result.returncode == 0:
                os.replace(tmp, out)
                return
        last = (result.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise OSError(f"{Path(cc).name} failed: {last}")
    finally:
        for path in (tmp, c_file):
            if os.path.exists(path):
                os.unlink(path)


def _library_path(cc: str, source: str) -> Path:
    """Where the library built by ``cc`` for this source, these flags and this CPU is kept."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([source, *FLAGS, *NATIVE_FLAGS, cc, version,
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    return cache_dir() / "native" / f"kernels-{key}.so"


def _load() -> ctypes.CDLL | None:
    setting = os.environ.get("ATTNLAB_NATIVE", "1")
    if setting.strip().lower() in ("0", "false", "no", "off"):
        _state["status"] = f"off (ATTNLAB_NATIVE={setting[:20]})"
        return None
    cc = _compiler()
    if cc is None:
        _state["status"] = "unavailable: no C compiler found (set CC)"
        return None
    if _SOURCE_TEXT is None:
        _state["status"] = "unavailable: kernels.c is missing from the installation"
        return None
    try:
        path = _library_path(cc, _SOURCE_TEXT)
        if not path.exists():
            _build(cc, path, _SOURCE_TEXT)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a damaged file in the cache: build it again once
            _build(cc, path, _SOURCE_TEXT)
            lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        reason = str(err)  # may name a path from the environment: bounded
        _state["status"] = f"unavailable: {reason if len(reason) <= 200 else reason[:197] + '...'}"
        return None
    lib.attnlab_one_query_attention.argtypes = [_PTR, _I64, _I64, _PTR, _I64, _I64, _I64, _PTR, _I64, _I64, _I64,
                                                _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, ctypes.c_float]
    lib.attnlab_one_query_attention.restype = ctypes.c_int
    lib.attnlab_greedy_pick.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR]
    lib.attnlab_greedy_pick.restype = _I64
    lib.attnlab_beam_topk.argtypes = [_PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _I64, _PTR, _PTR]
    lib.attnlab_beam_topk.restype = _I64
    lib.attnlab_greedy_record.argtypes = [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR,
                                          _PTR]
    lib.attnlab_greedy_record.restype = _I64
    lib.attnlab_decoder_layer_step.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, ctypes.c_int,
                                               ctypes.c_int, _PTR, _PTR, _I64, _I64, _I64, _I64, _PTR, _PTR, _I64,
                                               _I64, _I64, _I64, _PTR, _PTR]
    lib.attnlab_decoder_layer_step.restype = ctypes.c_int
    lib.attnlab_encoder_layer.argtypes = [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, ctypes.c_int,
                                          ctypes.c_int, _PTR, _PTR]
    lib.attnlab_encoder_layer.restype = ctypes.c_int
    lib.attnlab_cross_entropy_rows.argtypes = [_PTR, ctypes.c_int, _I64, _I64, _I64, _PTR, ctypes.c_float, _I64,
                                               _PTR, _PTR, ctypes.c_int, _PTR]
    lib.attnlab_cross_entropy_rows.restype = ctypes.c_int
    lib.attnlab_has_sgemm.restype = ctypes.c_int
    lib.attnlab_set_sgemm.argtypes = [_PTR]
    lib.attnlab_set_sgemm.restype = None
    sgemm = _blas_sgemm()
    lib.attnlab_set_sgemm(sgemm)
    blas = "" if sgemm else "; the compiled layers are off: no usable sgemm_ in PyTorch's libraries"
    _state["status"] = f"compiled ({path}){blas}"
    return lib


def _blas_sgemm() -> int | None:
    """The address of the BLAS ``sgemm_`` (Fortran interface, 32-bit integers) that PyTorch's own matrix products
    call: looked up from ``libtorch_cpu`` (that library and the ones it loads; the x86-64 Linux wheels link MKL into
    it), not from the whole process, where another library may export an ``sgemm_`` with 64-bit integers. ``None``
    when there is none or it fails a 2 x 3 x 2 product."""
    for path in sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*")):
        try:
            address = ctypes.cast(ctypes.CDLL(str(path)).sgemm_, ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
        return address if address and _sgemm_works(address) else None
    return None


def _sgemm_works(address: int) -> bool:
    """Whether ``sgemm_`` at ``address`` computes ``A^T B`` for a small column-major example."""
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(address)
    ints = [ctypes.c_int(v) for v in (2, 2, 3, 3, 3, 2)]  # m, n, k, lda, ldb, ldc
    one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
    a = (ctypes.c_float * 6)(1, 2, 3, 4, 5, 6)  # A: 3 x 2, column-major
    b = (ctypes.c_float * 6)(1, 0, 2, 0, 1, 1)  # B: 3 x 2
    c = (ctypes.c_float * 4)()
    fn(b"T", b"N", *[ctypes.byref(v) for v in ints[:3]], ctypes.byref(one), a, ctypes.byref(ints[3]), b,
       ctypes.byref(ints[4]), ctypes.byref(zero), c, ctypes.byref(ints[5]))
    return list(c) == [7.0, 16.0, 5.0, 11.0]


def _lib() -> ctypes.CDLL | None:
    if "lib" not in _state:
        _state["lib"] = _load()
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the kernels are built and loaded (building them on the first call)."""
    return _lib() is not None


def status() -> str:
    """``"compiled (PATH)"``, ``"off (ATTNLAB_NATIVE=0)"`` or ``"unavailable: REASON"``."""
    _lib()
    return str(_state["status"])


def _reset() -> None:
    """Forget the loaded library (tests change the environment and load again)."""
    _state.clear()


def _plain(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.stride(-1) == 1


def one_query_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        valid_lens: torch.Tensor | None = None, beams: int = 1) -> torch.Tensor | None:
    """Scaled dot-product attention of one query per row, in float32; ``None`` where the kernel does not apply.

    ``query``: ``(N, H, Dh)``, ``N = B * beams`` (row ``n`` attends with memory row ``n // beams``); ``key``,
    ``value``: ``(B, H, T, Dh)``, any strides with the last dimension contiguous (a view of a cache's buffers);
    ``valid_lens``: ``(B,)``, the keys each memory row may attend to (its first ``valid_lens[b]``), every one
    ``>= 1``; ``None``: all ``T``. Returns ``(N, 1, H * Dh)``, the heads concatenated, or ``None`` (kernels
    unavailable, not float32 on the CPU, other shapes, or autograd recording) so the caller uses PyTorch.
    """
    lib = _lib()
    if lib is None or not (_plain(query) and _plain(key) and _plain(value)) or torch.is_grad_enabled() and (
            query.requires_grad or key.requires_grad or value.requires_grad):
        return None
    N, H, Dh = query.shape
    B, _, T, _ = key.shape
    if beams < 1 or N % beams or key.shape != (N // beams, H, T, Dh) or value.shape != key.shape or T == 0:
        return None
    valid_lens = _lengths(valid_lens, B)
    if valid_lens is False:
        return None
    out = torch.empty(N, 1, H * Dh)
    code = lib.attnlab_one_query_attention(
        query.data_ptr(), query.stride(0), query.stride(1),
        key.data_ptr(), key.stride(0), key.stride(1), key.stride(2),
        value.data_ptr(), value.stride(0), value.stride(1), value.stride(2),
        None if valid_lens is None else valid_lens.data_ptr(), out.data_ptr(), N, beams, H, T, Dh,
        1.0 / math.sqrt(Dh))
    return out if code == 0 else None


def greedy_pick(logits: torch.Tensor, *, pad_id: int, bos_id: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Greedy decoding's choice: ``step_log_probs(logits, ...).max(dim=-1)`` without a log-probability matrix.

    ``logits``: ``(B, V)`` float32 on the CPU, rows contiguous. Returns ``(best_log_prob (B,), best_id (B,))``:
    the arg-max over every id but ``pad_id`` and ``bos_id`` (the first on ties) and its log-softmax over all ``V``
    ids; ``None`` where the kernel does not apply or a row holds NaN or ``+inf`` (PyTorch then gives its answer).
    """
    lib = _lib()
    if lib is None or logits.dim() != 2 or not _plain(logits) or logits.requires_grad:
        return None
    B, V = logits.shape
    if not (0 <= pad_id < V and 0 <= bos_id < V):
        return None
    best = torch.empty(B, dtype=torch.int64)
    best_logp = torch.empty(B)
    skip0, skip1 = sorted((pad_id, bos_id))
    failed = lib.attnlab_greedy_pick(logits.data_ptr(), B, V, logits.stride(0), skip0, skip1, best.data_ptr(),
                                     best_logp.data_ptr())
    return None if failed else (best_logp, best)


def greedy_record(best: torch.Tensor, best_logp: torch.Tensor, rows: torch.Tensor, step: int, eos_id: int, *,
                  out_tokens: torch.Tensor, scores: torch.Tensor, num_steps: torch.Tensor,
                  ended: torch.Tensor) -> torch.Tensor | None:
    """Greedy decoding's bookkeeping for one step in one call; ``None`` where the kernel does not apply.

    For the live rows (``best``, ``best_logp``: ``(B,)``; ``rows``: ``(B,)`` their indices among all ``N``):
    ``out_tokens[rows, step] = best``, ``scores[rows] += best_logp``, ``num_steps[rows] = step + 1`` and
    ``ended[rows[best == eos_id]] = True``. Returns the positions (among the live rows) of those that did not end,
    ``(B',)`` int64, in order. ``out_tokens``: ``(N, max_len)`` int64; ``scores``: ``(N,)`` float32;
    ``num_steps``: ``(N,)`` int64; ``ended``: ``(N,)`` bool; all contiguous on the CPU. A row index outside
    ``0..N-1`` or a ``step`` outside ``0..max_len-1``: ``None``, nothing written.
    """
    lib = _lib()
    if lib is None:
        return None
    B, (N, max_len) = best.shape[0], out_tokens.shape
    tensors = ((best, (B,), torch.int64), (best_logp, (B,), torch.float32), (rows, (B,), torch.int64),
               (out_tokens, (N, max_len), torch.int64), (scores, (N,), torch.float32), (num_steps, (N,), torch.int64),
               (ended, (N,), torch.bool))
    if not 0 <= step < max_len or any(t.shape != shape or t.dtype != dtype or t.device.type != "cpu" or
                                      not t.is_contiguous() for t, shape, dtype in tensors):
        return None
    keep = torch.empty(B, dtype=torch.int64)
    n = lib.attnlab_greedy_record(best.data_ptr(), best_logp.data_ptr(), rows.data_ptr(), B, N, step, eos_id,
                                  max_len, out_tokens.data_ptr(), scores.data_ptr(), num_steps.data_ptr(),
                                  ended.data_ptr(), keep.data_ptr())
    return None if n < 0 else keep[:n]


def beam_topk(logits: torch.Tensor, beam_scores: torch.Tensor, n_cand: int, *, pad_id: int,
              bos_id: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Beam search's candidates without a log-probability matrix: what ``step_log_probs(logits, ...)`` viewed as
    ``(Ba, K, V)``, plus ``beam_scores`` ``(Ba, K)``, then ``topk(n_cand)`` over ``(Ba, K * V)`` give.

    ``logits``: ``(Ba * K, V)`` float32 on the CPU, rows contiguous. Returns ``(scores, flat_ids)``, both
    ``(Ba, n_cand)``, best first (the lower flat id ``j * V + v`` first on ties); ``None`` where the kernel does not
    apply or a row's log-sum-exp is not finite (NaN or ``+inf`` logits: PyTorch then gives its answer).
    """
    lib = _lib()
    if lib is None or logits.dim() != 2 or not _plain(logits) or logits.requires_grad:
        return None
    if beam_scores.dim() != 2 or beam_scores.dtype != torch.float32 or not beam_scores.is_contiguous() or \
            beam_scores.device.type != "cpu":
        return None
    (Ba, K), V = beam_scores.shape, logits.shape[1]
    if logits.shape[0] != Ba * K or not (1 <= n_cand <= K * V) or not (0 <= pad_id < V and 0 <= bos_id < V):
        return None
    scores = torch.empty(Ba, n_cand)
    ids = torch.empty(Ba, n_cand, dtype=torch.int64)
    skip0, skip1 = sorted((pad_id, bos_id))
    failed = lib.attnlab_beam_topk(logits.data_ptr(), Ba, K, V, logits.stride(0), beam_scores.data_ptr(), skip0,
                                   skip1, n_cand, scores.data_ptr(), ids.data_ptr())
    return None if failed else (scores, ids)


_ACTIVATIONS = ("relu", "gelu")
_REQUIRED = (2, 4)  # of each sublayer's six weights (see decoder_layer_step), the two projection weights


def _layer_weights(weights: Sequence[torch.Tensor | None], shapes: Sequence[tuple[int, ...]],
                   owner: object | None) -> ctypes.Array | None:
    """The data pointers of a layer's weights, ``None`` unless each has its shape (a first dimension given as a tuple:
    any of those; the kernel reads the first rows), is float32 and contiguous on the CPU and needs no gradient under
    autograd (biases and LayerNorm parameters may be ``None``).

    With an ``owner`` (the layer), the checked pointers are kept for it and reused while it passes the same tensors
    with the same data for the same ``shapes``: building and checking them costs more than a decoding step's compiled
    layer at a few rows."""
    current = tuple(None if t is None else t.data_ptr() for t in weights)
    kept = None if owner is None else _packed.get(owner)
    if kept is not None and kept[1] == current and kept[3] == shapes and \
            all(a is b for a, b in zip(kept[0], weights, strict=True)) and \
            not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in weights)):
        return kept[2]
    if len(weights) != len(shapes):
        return None
    grad = torch.is_grad_enabled()
    for i, (t, shape) in enumerate(zip(weights, shapes, strict=True)):
        if t is None and i % 6 not in _REQUIRED:
            continue
        if t is None or t.dim() != len(shape) or t.shape[1:] != shape[1:] or not _plain(t) or \
                not t.is_contiguous() or grad and t.requires_grad:
            return None
        if t.shape[0] not in (shape[0] if isinstance(shape[0], tuple) else (shape[0],)):
            return None
    pointers = (_PTR * len(weights))(*current)
    if owner is not None:
        _packed[owner] = (tuple(weights), current, pointers, list(shapes))
    return pointers


_packed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> (weights, data pointers, array, shapes)


def _sublayer_shapes(D: int, F_dim: int, kinds: str) -> list[tuple]:
    """Shapes of the six weights of each sublayer in ``kinds``: s(elf-attention), c(ross-attention), f(eed-forward).
    Cross-attention's query projection may be the first ``D`` rows of a fused ``(3D, D)`` one (its bias too)."""
    projections = {"s": ((3 * D, D), (3 * D,), (D, D), (D,)), "c": (((D, 3 * D), D), ((D, 3 * D),), (D, D), (D,)),
                   "f": ((F_dim, D), (F_dim,), (D, F_dim), (D,))}
    return [shape for kind in kinds for shape in ((D,), (D,), *projections[kind])]


def _compiled_layers(activation: str) -> ctypes.CDLL | None:
    lib = _lib()
    return lib if lib is not None and lib.attnlab_has_sgemm() and activation in _ACTIVATIONS else None


def _lengths(valid_lens: torch.Tensor | None, B: int) -> torch.Tensor | None | bool:
    """``valid_lens`` as a contiguous int64 ``(B,)`` tensor, ``None`` for none, ``False`` when unusable."""
    if valid_lens is None:
        return None
    if valid_lens.shape != (B,) or valid_lens.device.type != "cpu" or valid_lens.is_floating_point():
        return False
    return valid_lens.to(torch.int64).contiguous()


def decoder_layer_step(x: torch.Tensor, weights: Sequence[torch.Tensor | None], eps: Sequence[float], *,
                       norm_first: bool, activation: str, num_heads: int, self_cache: KVCache,
                       cross_key: torch.Tensor, cross_value: torch.Tensor, valid_lens: torch.Tensor | None,
                       beams: int = 1, owner: object | None = None) -> torch.Tensor | None:
    """One decoding step of a Transformer decoder layer in one compiled call; ``None`` where it does not apply.

    What :meth:`~attnlab.models.transformer.TransformerDecoderLayer.step` computes: self-attention over
    ``self_cache`` (this step's key and value appended to it), cross-attention over the memory's cached keys and
    values, feed-forward, each with its residual sum and LayerNorm (before the sublayer with ``norm_first``, after it
    without). The six products go to the BLAS PyTorch itself calls, the rest are loops of ``kernels.c``.

    Args:
        x: ``(R, 1, D)`` float32, ``R = B * beams`` rows (the beams of each memory row consecutive).
        weights: 18 tensors, six per sublayer (self-attention, cross-attention, feed-forward): its LayerNorm's
            weight and bias, an input projection's weight and bias, an output projection's weight and bias. The
            input projections: self-attention's fused Q/K/V ``(3D, D)``, cross-attention's query ``(D, D)`` (or a
            fused ``(3D, D)`` and ``(3D,)`` bias, of which the first ``D`` rows are read), the feed-forward's first
            layer ``(F, D)``. Biases and LayerNorm parameters may be ``None``.
        eps: the three LayerNorms' epsilons. activation: ``"relu"`` or ``"gelu"`` (erf).
        self_cache: a growing :class:`~attnlab.attention.cache.KVCache` holding ``R`` rows of earlier steps.
        cross_key, cross_value: ``(B, H, Ts, Dh)``; ``valid_lens``: ``(B,)`` keys each memory row may attend to
            (``None``: all ``Ts``; none: a zero context, as PyTorch's paths give).
        owner: the layer these weights belong to, for which their checked pointers are kept (see
            :func:`_layer_weights`).

    Returns ``(R, 1, D)``; ``x`` and the cache are untouched when it returns ``None``.
    """
    lib = _compiled_layers(activation)
    R, D, H = x.shape[0], x.shape[-1], num_heads
    if lib is None or x.shape != (R, 1, D) or not _plain(x) or D % H or beams < 1 or R % beams or \
            len(weights) != 18 or weights[14] is None or torch.is_grad_enabled() and x.requires_grad:
        return None
    F_dim, B, Dh = weights[14].shape[0], R // beams, D // H
    pointers = _layer_weights(weights, _sublayer_shapes(D, F_dim, "scf"), owner)
    lens = _lengths(valid_lens, B)
    if pointers is None or lens is False or cross_key.shape[0] != B or cross_key.shape[1] != H or \
            cross_key.shape[3] != Dh or cross_value.shape != cross_key.shape or \
            cross_value.stride() != cross_key.stride() or not (_plain(cross_key) and _plain(cross_value)) or \
            cross_key.requires_grad or cross_value.requires_grad:
        return None
    cache_key, cache_value = self_cache.key, self_cache.value
    if self_cache.static or cache_key is None or cache_value is None or cache_key.shape[:2] != (R, H) or \
            cache_key.shape[3] != Dh or cache_value.shape != cache_key.shape or not \
            (_plain(cache_key) and _plain(cache_value)) or cache_key.requires_grad or cache_value.requires_grad:
        return None
    key_buffer, value_buffer, T = self_cache.next_slot()  # from here on the step cannot fail
    Ts = cross_key.shape[2]
    out = x.contiguous().clone()
    scratch = torch.empty(R * (6 * D + F_dim) + T + 1 + Ts)
    lib.attnlab_decoder_layer_step(
        out.data_ptr(), R, D, H, F_dim, beams, pointers, (_F32 * 3)(*eps), int(norm_first),
        _ACTIVATIONS.index(activation), key_buffer.data_ptr(), value_buffer.data_ptr(), *key_buffer.stride()[:3], T,
        cross_key.data_ptr(), cross_value.data_ptr(), *cross_key.stride()[:3], Ts,
        None if lens is None else lens.data_ptr(), scratch.data_ptr())
    return out


def encoder_layer(x: torch.Tensor, weights: Sequence[torch.Tensor | None], eps: Sequence[float], *, norm_first: bool,
                  activation: str, num_heads: int, valid_lens: torch.Tensor | None,
                  owner: object | None = None) -> torch.Tensor | None:
    """A Transformer encoder layer for inference in one compiled call; ``None`` where it does not apply.

    What :class:`~attnlab.models.transformer.TransformerEncoderLayer` computes in eval mode: self-attention in which
    each position of row ``b`` attends to the first ``valid_lens[b]`` positions (``None``: all), then the
    feed-forward, with residual sums and LayerNorms as in :func:`decoder_layer_step`, whose first and last sublayers'
    ``weights`` (12 tensors) and ``eps`` (2) these are. ``x``: ``(B, T, D)`` float32. Returns ``(B, T, D)``.
    """
    lib = _compiled_layers(activation)
    if lib is None or x.dim() != 3 or not _plain(x) or len(weights) != 12 or weights[8] is None or \
            torch.is_grad_enabled() and x.requires_grad:
        return None
    (B, T, D), H = x.shape, num_heads
    if D % H or B * T == 0:
        return None
    F_dim = weights[8].shape[0]
    pointers = _layer_weights(weights, _sublayer_shapes(D, F_dim, "sf"), owner)
    lens = _lengths(valid_lens, B)
    if pointers is None or lens is False:
        return None
    out = x.contiguous().clone()
    R = B * T
    scratch = [torch.empty(n) for n in (R * D, 3 * R * D, R * D, R * D, R * F_dim, T * T)]
    lib.attnlab_encoder_layer(out.data_ptr(), B, T, D, H, F_dim, pointers, (_F32 * 2)(*eps), int(norm_first),
                              _ACTIVATIONS.index(activation), None if lens is None else lens.data_ptr(),
                              (_PTR * 6)(*[t.data_ptr() for t in scratch]))
    return out


_ROW_DTYPES = (torch.float32, torch.bfloat16)


def cross_entropy_rows(logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float, skip: int = 0,
                       grad_dtype: torch.dtype | None = None) -> tuple[float, torch.Tensor | None] | None:
    """The label-smoothed cross-entropy of each row of ``logits`` and its gradient, in one pass per row (training's
    loss, :class:`attnlab.train.loss._LinearCrossEntropy`); ``None`` where the kernel does not apply.

    ``logits``: ``(C, V)`` float32 or bfloat16 on the CPU, the last dimension contiguous; ``target``: ``(C,)``
    int64 ids. Returns ``(loss, grad)``: the summed loss of the rows from ``skip`` on (float64 arithmetic over
    float32 rows; see ``masked_cross_entropy`` for the formula) and, with ``grad_dtype`` (float32 or bfloat16),
    ``d loss / d logits`` ``(C, V)`` in that dtype with rows before ``skip`` zero (``None`` without). ``None``
    where the kernels are unavailable, the inputs are of another kind, a row holds NaN or an infinity, or a target
    is out of range: PyTorch's operators then give their answer (or error).
    """
    lib = _lib()
    if lib is None or logits.dim() != 2 or logits.dtype not in _ROW_DTYPES or logits.device.type != "cpu" or \
            logits.stride(-1) != 1 or grad_dtype not in (None, *_ROW_DTYPES) or target.shape != logits.shape[:1] \
            or target.dtype != torch.int64 or target.device.type != "cpu" or not 0 <= skip <= logits.shape[0]:
        return None
    C, V = logits.shape
    target = target.contiguous()
    grad = None if grad_dtype is None else torch.empty(C, V, dtype=grad_dtype)
    loss, work = ctypes.c_double(0.0), torch.empty(V)
    code = lib.attnlab_cross_entropy_rows(
        logits.data_ptr(), int(logits.dtype == torch.bfloat16), C, V, logits.stride(0), target.data_ptr(),
        float(label_smoothing), skip, ctypes.byref(loss), None if grad is None else grad.data_ptr(),
        int(grad_dtype == torch.bfloat16), work.data_ptr())
    return None if code else (loss.value, grad)
