"""Base machinery for attnlab's frozen, typed, validated config dataclasses.

Every config is a frozen dataclass whose fields carry a ``help`` text in their metadata (declared with
:func:`option`); the text becomes the CLI ``--help``. Configs round-trip through plain dicts (JSON/YAML)
and reject unknown keys with a message that names them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from attnlab.core.errors import ConfigError

C = TypeVar("C")


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:  # noqa: A002
    """A dataclass field with a help text (shown by ``--help`` and in the docs)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def field_help(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def check_choice(cls_name: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{cls_name}.{name}: got {value!r}, expected one of {', '.join(map(repr, choices))}")


def check_range(cls_name: str, name: str, value: float, *, low: float | None = None,
                high: float | None = None, low_inclusive: bool = True) -> None:
    ok = True
    if low is not None:
        ok = value >= low if low_inclusive else value > low
    if high is not None:
        ok = ok and value <= high
    if not ok:
        lo = "" if low is None else (f">= {low}" if low_inclusive else f"> {low}")
        hi = "" if high is None else f"<= {high}"
        bounds = " and ".join(s for s in (lo, hi) if s)
        raise ConfigError(f"{cls_name}.{name}: got {short_repr(value)}, expected a value {bounds}")


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters; a huge integer is named by its size (its repr may be megabytes
    long, and Python refuses to print one of over 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def validate_types(obj: Any) -> None:
    """Check every field's value against its annotation (Literal choices, int/float/bool/str, Optional)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _check_type(type(obj).__name__, f.name, getattr(obj, f.name), hints[f.name])


def _check_type(owner: str, name: str, value: Any, hint: Any) -> None:
    origin = get_origin(hint)
    if origin is Literal:
        check_choice(owner, name, value, get_args(hint))
        return
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(hint):
            try:
                _check_type(owner, name, value, arg)
                return
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{owner}.{name}: got {value!r}, which matches none of {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{owner}.{name}: expected None, got {value!r}")
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name}: expected a number, got {value!r}")
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}.{name}: expected an integer, got {value!r}")
        return
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise ConfigError(f"{owner}.{name}: expected {hint.__name__}, got {value!r}")
        return
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{owner}.{name}: expected a list, got {value!r}")
        return
    if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
        raise ConfigError(f"{owner}.{name}: expected a {hint.__name__}, got {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass."""
    out = dataclasses.asdict(cfg)
    return json.loads(json.dumps(out))  # tuples -> lists, checks it is JSON-serializable


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "config") -> C:
    """Build ``cls`` from a dict; unknown keys and bad values raise :class:`ConfigError` naming ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, where=f"{where}.{key}")
        elif get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def yaml_loads(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a number (YAML 1.2 does; PyYAML's 1.1 rules need a dot)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$|^[-+]?(?:\d[\d_]*)?\.\d+(?:[eE][-+]?\d+)?$"
                   r"|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
        list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 -- a SafeLoader subclass


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (errors name the file)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = yaml_loads(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data
