"""A small OData ``$filter`` evaluator for the emulator's Azure AI Search.

Grammar: ``or`` of ``and`` of (``not`` x | ``( ... )`` | ``field op literal``), with ``op`` one
of eq, ne, gt, ge, lt, le and literals ``'text'`` (quotes doubled inside), numbers, ``true``,
``false``, ``null`` and bare ISO dates (``2025-01-01T00:00:00Z``). Also
``search.in(field, 'a,b')``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[(),])|(?P<word>[A-Za-z0-9_.:+\-/]+))"
)
_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}


def parse(text: str) -> Predicate:
    """Compile a filter expression into a predicate over a document dict."""
    tokens = _tokenize(text)
    pred, pos = _or(tokens, 0)
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r} in filter {text!r}")
    return pred


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse filter {text!r} at {pos}")
        tokens.append(m.group(m.lastgroup or ""))
        pos = m.end()
    return tokens


def _or(t: list[str], i: int) -> tuple[Predicate, int]:
    left, i = _and(t, i)
    while i < len(t) and t[i] == "or":
        right, i = _and(t, i + 1)
        left = (lambda a, b: lambda d: a(d) or b(d))(left, right)
    return left, i


def _and(t: list[str], i: int) -> tuple[Predicate, int]:
    left, i = _unary(t, i)
    while i < len(t) and t[i] == "and":
        right, i = _unary(t, i + 1)
        left = (lambda a, b: lambda d: a(d) and b(d))(left, right)
    return left, i


def _unary(t: list[str], i: int) -> tuple[Predicate, int]:
    if t[i] == "not":
        inner, i = _unary(t, i + 1)
        return (lambda d: not inner(d)), i
    if t[i] == "(":
        inner, i = _or(t, i + 1)
        if t[i] != ")":
            raise ValueError("missing ')' in filter")
        return inner, i + 1
    if t[i] == "search.in":
        field, values = t[i + 2], _literal(t[i + 4])
        allowed = set(str(values).split(","))
        return (lambda d: str(d.get(field)) in allowed), i + 6
    field, op, value = t[i], t[i + 1], _literal(t[i + 2])
    if op not in _OPS:
        raise ValueError(f"unsupported operator {op!r} in filter")
    compare = _OPS[op]
    return (lambda d: compare(*_comparable(d.get(field), value))), i + 3


def _literal(token: str) -> Any:
    if token.startswith("'"):
        return token[1:-1].replace("''", "'")
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    try:
        return float(token)
    except ValueError:
        return token  # a bare date/time literal, compared as a date below


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    """Compare dates as dates when both sides look like ISO dates, else as they are."""
    da, db = _as_date(a), _as_date(b)
    if da is not None and db is not None:
        return da, db
    if isinstance(b, float) and isinstance(a, int | float):
        return float(a), b
    return a, b


def _as_date(v: Any) -> datetime | None:
    if not isinstance(v, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", v):
        return None
    try:
        parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
