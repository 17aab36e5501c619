"""pydantic's validation errors as one `ConfigurationError` a user can act on.

The first problem is reported, naming its key path (``vars.experiment.arms[0].name``), its line
in ``cpo.yml`` (or ``--vars``, for a value given there) and what was expected, in plain words
(``expected an integer, got the string '4'``), never pydantic's own wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from cpo.errors import ConfigurationError

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Where settings came from, to point an error at the right file and line.

    Attributes:
        line_of: Line of a dotted key path in ``cpo.yml`` (None when unknown).
        path: The file shown in errors.
        cli_vars: The ``--vars`` mapping (errors inside it name ``--vars``, not a line).
        file_vars: The ``vars`` of the file, before ``--vars`` was merged in.
    """

    line_of: Callable[[str], int | None]
    path: str = "cpo.yml"
    cli_vars: Mapping[str, Any] | None = None
    file_vars: Mapping[str, Any] | None = None


def checked(validate: Callable[[Any], T], data: Any, prefix: tuple[Any, ...], origin: Origin) -> T:
    """`validate(data)` (a pydantic validation of the settings found at key path `prefix`).

    The one place where a pydantic `ValidationError` becomes a `ConfigurationError`: every
    settings model, whether ``cpo.yml`` loads or Python code hands it a mapping, goes through it,
    so every settings error reads the same.

    Raises:
        ConfigurationError: the first problem, naming the key path, its line and what is expected.
    """
    try:
        return validate(data)
    except ValidationError as e:
        raise to_configuration_error(e, prefix, origin, data) from None


def to_configuration_error(
    error: ValidationError, prefix: tuple[Any, ...], origin: Origin, data: Any
) -> ConfigurationError:
    """The first problem of `error` (raised validating `data`, found at key path `prefix`)."""
    details = [(d, _clean_loc(d["loc"], data)) for d in error.errors(include_url=False)]
    # Alternatives of a union all fail: report the error that got furthest into the value.
    depth = max(len(loc) for _, loc in details)
    deepest = [(d, loc) for d, loc in details if len(loc) == depth]
    first, loc = deepest[0]
    message = _message(first)
    if first["type"] == "unknown_key":
        loc = (*loc, first["ctx"]["key"])
    elif first["type"] == "secret":
        loc = (*loc, first["ctx"]["key"])
        message = message.split(": ", 1)[1]
    elif first["type"] == "value_error" and (path := _KEY_PREFIX.match(message)):
        # A model-level check that names the key it concerns ("arms[0].weight: ..."): point there.
        loc = (*loc, *key_parts(path.group(1)))
        message = path.group(2).removesuffix(f", got {describe(first.get('input'))}")
    else:
        alternatives = [_message(d) for d, other in deepest if other == loc]
        if len(alternatives) > 1 and all(", got " in a for a in alternatives):
            wanted = dict.fromkeys(
                a.split(", got ")[0].removeprefix("expected ") for a in alternatives
            )
            message = f"expected {' or '.join(wanted)}, got {describe(first.get('input'))}"
    # Union alternatives that failed earlier on the way (a prefix of `loc`) are not problems.
    others = {other for _, other in details if other != loc[: len(other)]}
    if others:
        more = len(others)
        message += f" (and {more} more problem{'s' if more > 1 else ''}; fix this one first)"
    return configuration_error(origin, prefix + loc, message)


_KEY_PREFIX = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (.*)$", re.S)


def key_parts(path: str) -> list[str | int]:
    """``metrics[0].column`` -> ``["metrics", 0, "column"]``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", path):
        parts.append(name if name else int(index))
    return parts


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """The parts of a pydantic loc that are keys or indexes of `data` (not union member tags)."""
    cleaned = []
    value = data
    for part in loc:
        if _has(value, part):
            value = value[part]
        elif isinstance(value, Mapping) and isinstance(part, str) and part.isidentifier():
            # A missing key of a mapping: name it, unless it is a union member's type tag.
            if part[:1].isupper() or part in ("str", "int", "float", "bool", "list", "dict"):
                continue
            cleaned.append(part)
            value = None
            continue
        else:
            continue
        cleaned.append(part)
    return tuple(cleaned)


_OWN_MESSAGE = frozenset(
    (
        "unknown_key",
        "secret",
        "missing_type",
        "identifier",
        "finite",
        "non_empty",
        "memory_size",
        "layered",
    )
)
"""Error types raised by our own validators, whose message is already in our words."""
_EXPECTED = {
    **dict.fromkeys(("int_type", "int_from_float", "int_parsing"), "an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "a number"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "true or false"),
    "string_type": "a string",
    **dict.fromkeys(("list_type", "tuple_type"), "a list"),
    **dict.fromkeys(
        ("date_type", "date_parsing", "date_from_datetime_parsing"), "a date like 2026-11-24"
    ),
}
"""pydantic's type errors -> what was expected (the message adds what was given)."""
_BOUNDS = {
    "greater_than_equal": ("of at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("of at most", "le"),
    "less_than": ("less than", "lt"),
    "too_short": ("at least", "min_length"),
    "too_long": ("at most", "max_length"),
}
"""pydantic's bound errors -> (how the bound reads, its key in the error's context)."""
_MAPPING_TYPES = ("dict_type", "model_type", "model_attributes_type", "mapping_type")


def _message(detail: Mapping[str, Any]) -> str:
    kind = detail["type"]
    got = describe(detail.get("input"))
    ctx = detail.get("ctx") or {}
    if kind in _OWN_MESSAGE:
        return detail["msg"]
    if kind in ("sql_expression", "custom", "value_error"):
        text = detail["msg"].removeprefix("Value error, ")
        if "got" in text or kind == "sql_expression" or isinstance(detail.get("input"), Mapping):
            return text
        return f"{text}, got {got}"
    if kind == "missing":
        return "is required but not set"
    if kind == "literal_error":
        expected = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        if "[key]" in detail["loc"]:
            return f"unknown key {detail.get('input')!r}; expected one of: {expected}"
        return f"expected one of: {expected}; got {got}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind in _MAPPING_TYPES:
        return f"expected a mapping, got {_kind_name(detail.get('input'))}"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        if key.endswith("_length"):
            return f"expected {words} {ctx.get(key)} item(s), got {got}"
        number = "an integer" if type(detail.get("input")) is int else "a number"
        return f"expected {number} {words} {ctx[key]}, got {got}"
    if kind == "string_too_short":
        return "expected a non-empty string"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern')}, got {got}"
    return f"{detail['msg']}; got {got}"


def configuration_error(origin: Origin, loc: tuple[Any, ...], message: str) -> ConfigurationError:
    """The error at key path `loc`, pointing at ``--vars`` or at its line in the file."""
    key = format_key(loc)
    dotted = ".".join(str(p) for p in loc)
    if loc[:1] == ("vars",) and origin.cli_vars and _from_cli(origin, loc[1:]):
        return ConfigurationError(message, path="--vars", key=key)
    return ConfigurationError(message, path=origin.path, line=origin.line_of(dotted), key=key)


def _from_cli(origin: Origin, loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``vars.<loc>`` came from ``--vars`` rather than the file."""
    if not _in_mapping(origin.cli_vars or {}, loc):
        return False
    value: Any = origin.cli_vars
    for part in loc:
        value = value[part] if _has(value, part) else None
    # A mapping in both: the key is the file's too; point at the file's line.
    in_file = origin.file_vars is not None and _in_mapping(origin.file_vars, loc)
    return not (isinstance(value, Mapping) and in_file)


def _in_mapping(mapping: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    value: Any = mapping
    for part in loc:
        if _has(value, part):
            value = value[part]
        else:
            # A key the --vars value does not have: it came from --vars only if its parent is a
            # leaf --vars replaced wholesale (a list or a scalar).
            return not isinstance(value, Mapping) and value is not mapping
    return True


def _has(value: Any, part: Any) -> bool:
    if isinstance(value, Mapping):
        return part in value
    return isinstance(value, list | tuple) and isinstance(part, int) and 0 <= part < len(value)


def format_key(loc: tuple[Any, ...]) -> str:
    """``("vars", "experiment", "arms", 0, "name")`` -> ``vars.experiment.arms[0].name``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe(value: Any) -> str:
    """A short description of a value for an error message (``the string 'x'``, ``int -1``)."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"list {value!r}"[:80]
    return f"{type(value).__name__} {value!r}"[:80]


def _kind_name(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return describe(value)
