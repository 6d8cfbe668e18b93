"""Base machinery for attnlab's frozen, typed, validated config dataclasses.

Every config is a frozen dataclass whose fields carry a ``help`` text in their metadata (declared with
:func:`option`); the text becomes the CLI ``--help``. Configs round-trip through plain dicts (JSON/YAML)
and reject unknown keys with a message that names them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

from attnlab.core.errors import ConfigError, one_line, short_repr

if TYPE_CHECKING:
    import yaml

C = TypeVar("C")

__all__ = ["check_choice", "check_range", "field_help", "from_dict", "load_file", "option", "quote_keys", "short_repr",
           "to_dict", "validate_types", "yaml_loads", "yaml_problem"]


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
        raise ConfigError(f"{cls_name}.{name}: got {short_repr(value)}, expected one of "
                          f"{', '.join(map(repr, choices))}")


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
        raise ConfigError(f"{owner}.{name}: got {short_repr(value)}, which matches none of {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{owner}.{name}: expected None, got {short_repr(value)}")
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name}: expected a number, got {short_repr(value)}")
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}.{name}: expected an integer, got {short_repr(value)}")
        return
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise ConfigError(f"{owner}.{name}: expected {hint.__name__}, got {short_repr(value)}")
        return
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{owner}.{name}: expected a list, got {short_repr(value)}")
        return
    if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
        raise ConfigError(f"{owner}.{name}: expected a {hint.__name__}, got {short_repr(value)}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass."""
    out = dataclasses.asdict(cfg)
    return json.loads(json.dumps(out))  # tuples -> lists, checks it is JSON-serializable


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "config") -> C:
    """Build ``cls`` from a dict; unknown keys and bad values raise :class:`ConfigError` naming ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in names]  # YAML keys may be numbers, not only strings
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {quote_keys(unknown)} for {cls.__name__}; "
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
        raise ConfigError(f"{where}: {one_line(exc)}") from None


def quote_keys(keys: list[Any], most: int = 5) -> str:
    """Up to ``most`` mapping keys for an error message, each bounded (keys come from the user's file)."""
    shown = ", ".join(k if isinstance(k, str) and len(k) <= 40 else short_repr(k, 40) for k in keys[:most])
    return shown + (f" (and {len(keys) - most} more)" if len(keys) > most else "")


def yaml_loads(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a number (YAML 1.2 does; PyYAML's 1.1 rules need a dot), and
    refuses anchors and aliases (``&name``, ``*name``).

    Config files never need them, and aliases let a few hundred bytes expand into billions of values ("billion
    laughs") as soon as anything walks the structure -- merging, validating, quoting a value in an error -- so they
    are refused while parsing, before any structure exists. Raises :class:`yaml.YAMLError` for invalid text.
    """
    import yaml

    return yaml.load(text, Loader=_config_loader())  # noqa: S506 -- a SafeLoader subclass


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict; every problem is a one-line :class:`ConfigError` naming the file
    (and, for a syntax error, the line and column)."""
    import yaml

    p = Path(path)
    kind = "YAML" if p.suffix in (".yaml", ".yml") else "JSON"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or one_line(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml_loads(text) if kind == "YAML" else json.loads(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {yaml_problem(exc)}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {one_line(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not a valid config: nested too deeply") from None
    except ValueError as exc:  # a number of over 4,300 digits, a date like 2026-13-45
        raise ConfigError(f"{p}: not a valid config: {one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data


def yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``"<problem> at line L column C"`` of a YAML error (its ``str`` spans several lines and quotes the input)."""
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"{one_line(exc.problem or exc.context or 'syntax error')}{where}"


@functools.cache
def _config_loader() -> type:
    """SafeLoader + YAML 1.2 exponent floats - anchors and aliases (see :func:`yaml_loads`); built on first use so
    that importing the config machinery does not import PyYAML."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(
                    None, None, "anchors and aliases (&name, *name) are not allowed in attnlab config files; write "
                    "the values out", event.start_mark)
            return super().compose_node(parent, index)

    ConfigLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$|^[-+]?(?:\d[\d_]*)?\.\d+(?:[eE][-+]?\d+)?$"
                   r"|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
        list("-+0123456789."))
    return ConfigLoader
