"""SQL functions over text, shared with the Python screening so one rule set serves both."""

from __future__ import annotations

from cpo import policy
from cpo.udf import sql_function


@sql_function(parameters=["VARCHAR"], return_type="BOOLEAN")
def looks_like_injection(text: str | None) -> bool:
    """True when `text` holds instructions aimed at a language model (`cpo.policy` patterns)."""
    return bool(text) and bool(policy.find_injection(text))
