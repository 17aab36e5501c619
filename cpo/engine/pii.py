"""Which columns hold personal data: the one rule, read by test samples and exports.

A column is PII when ``schema.yml`` declares it ``meta: {pii: true}``. `cpo.engine.execute` hashes
such values in failing-test samples; `cpo.engine.export` hashes or drops them in exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pii_of(columns: Mapping[str, Any]) -> frozenset[str]:
    """The names among one node's `columns` (name -> schema.yml spec) declared ``meta.pii``."""
    return frozenset(
        name
        for name, spec in columns.items()
        if isinstance(spec, Mapping) and (spec.get("meta") or {}).get("pii")
    )
