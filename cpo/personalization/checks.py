"""What every screening check returns, and the text shapes the checks share.

A `Check` is one row of ``safety_screenings(variant_id, check, severity, passed, reason)``
(without the variant id). Severity means:

* ``harm:<Category>``: the category severity on Azure's 0-7 scale;
* every other check: the number of findings (0 when it passed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from cpo.errors import ConfigurationError

MERGE_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
CITATION_BRACKET = re.compile(r"\[[^\]\s]+\]")


@dataclass(frozen=True)
class Check:
    """One screening verdict: a row of ``safety_screenings`` (without the variant id)."""

    check: str
    severity: int
    passed: bool
    reason: str


def ok(check: str, reason: str = "ok") -> Check:
    """A passed check."""
    return Check(check, 0, True, reason)


def findings(check: str, found: Sequence[str], ok_reason: str = "ok") -> Check:
    """A check that fails with one finding per entry of `found` (passes when there are none)."""
    if not found:
        return ok(check, ok_reason)
    return Check(check, len(found), False, "; ".join(found))


def unique(found: Iterable[str]) -> list[str]:
    """`found` without repeats (case-insensitive), first spelling kept."""
    seen: dict[str, str] = {}
    for f in found:
        seen.setdefault(f.lower(), f)
    return list(seen.values())


def strip_markup(text: str) -> str:
    """Remove merge tags and citation brackets: neither is copy a reader sees as a claim."""
    return CITATION_BRACKET.sub(" ", MERGE_TAG.sub(" ", text))


def data_file(package: str, name: str) -> dict[str, Any]:
    """A YAML data file shipped in `package` (``lexicons/injection.yml``, ``rules/dates.yml``)."""
    text = resources.files(package).joinpath(name).read_text("utf-8")
    return yaml.safe_load(text) or {}


def refuse_unknown(settings: Mapping[str, Any], known: Iterable[str], key: str, what: str) -> None:
    """Raise for the first key of `settings` not in `known`, naming it under `key` in cpo.yml.

    Raises:
        ConfigurationError: ``unknown <what> setting 'x'; known: ...``.
    """
    known = sorted(known)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigurationError(
            f"unknown {what} setting {unknown[0]!r}; known: {', '.join(known)}",
            path="cpo.yml",
            key=f"{key}.{unknown[0]}",
        )
