"""SQL functions over text, shared with the Python screening so one rule set serves both.

Every function normalises the text first (`cpo.personalization.normalize`: NFKC, zero-width and
control
characters stripped, look-alikes and digits-for-letters folded), exactly as the screen of
generated copy does (`cpo.personalization.injection` and `cpo.personalization.copy_rules`).

* ``looks_like_injection(text)``: instructions aimed at a language model, in English, French,
  Spanish, German, Italian or Portuguese (``cpo/providers/lexicons/injection.yml``).
* ``looks_like_markup(text)``: any HTML/XML tag (``<b>``, ``<script>``, ``<img onerror=...>``,
  ``<svg onload=...>``), an HTML comment, a ``javascript:`` URL or an inline event handler.
* ``looks_like_formula(text)``: a spreadsheet formula (OWASP CSV injection): a line starting
  with ``=`` or ``@``, or with ``+``/``-`` followed by a formula (``-2+3``, ``+SUM(``); and
  ``=HYPERLINK(``, ``=IMPORTXML(``, ``=WEBSERVICE(`` ... or ``cmd|`` anywhere. Bullets
  (``- item``) and negative prices inside a sentence are not formulas.
"""

from __future__ import annotations

from cpo.engine.udf import sql_function
from cpo.personalization import copy_rules, injection


@sql_function(parameters=["VARCHAR"], return_type="BOOLEAN")
def looks_like_injection(text: str | None) -> bool:
    """True when `text` holds instructions aimed at a language model (``injection.yml``)."""
    return bool(text and injection.find_injection(text))


@sql_function(parameters=["VARCHAR"], return_type="BOOLEAN")
def looks_like_markup(text: str | None) -> bool:
    """True when `text` holds HTML/XML markup, a ``javascript:`` URL or an event handler."""
    return bool(text and copy_rules.find_markup(text))


@sql_function(parameters=["VARCHAR"], return_type="BOOLEAN")
def looks_like_formula(text: str | None) -> bool:
    """True when a line of `text` starts a spreadsheet formula, or it calls a formula function."""
    return bool(text and copy_rules.find_formulas(text))
