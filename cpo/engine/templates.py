"""The one Jinja environment factory: sandboxed, strict about undefined names.

    env = sandboxed_environment(template_loader(Path(__file__).parent / "templates"),
                                autoescape=True)
    html = env.get_template("page.html.j2").render(title=title)

Every template CPO renders (the docs site, the experiment report and its sections, prompt and
message templates) goes through `sandboxed_environment`: a
`jinja2.sandbox.ImmutableSandboxedEnvironment` (a template cannot reach Python internals or
change the data it is given) with `jinja2.StrictUndefined` (a misspelt name is an error, never
an empty string). HTML is rendered with ``autoescape=True``; plain text (prompts) without.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_SUFFIX = ".j2"
"""Template files end in ``.j2`` (``report.html.j2``); packaged with CPO by pyproject's
package-data."""


def template_loader(*directories: Path | str) -> jinja2.BaseLoader:
    """A loader looking up template names in `directories`, first match wins (UTF-8 files)."""
    return jinja2.FileSystemLoader([str(d) for d in directories], encoding="utf-8")


def sandboxed_environment(
    loader: jinja2.BaseLoader | None = None,
    *,
    autoescape: bool = False,
    filters: Mapping[str, Callable[..., Any]] | None = None,
    globals: Mapping[str, Any] | None = None,
    **options: Any,
) -> ImmutableSandboxedEnvironment:
    """A sandboxed Jinja environment with `jinja2.StrictUndefined`.

    Args:
        loader: Where named templates come from (`template_loader`); None for strings only.
        autoescape: Escape every printed value (HTML); False for plain text.
        filters: Extra filters by name.
        globals: Extra global names.
        **options: Other `jinja2.Environment` options (``trim_blocks``, ...); ``undefined`` is
            always `jinja2.StrictUndefined`.
    """
    env = ImmutableSandboxedEnvironment(
        loader=loader, autoescape=autoescape, undefined=jinja2.StrictUndefined, **options
    )
    env.filters.update(filters or {})
    env.globals.update(globals or {})
    return env
