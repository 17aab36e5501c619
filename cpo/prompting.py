"""Render prompt and message templates from ``prompts/`` in a sandboxed Jinja environment.

Templates are plain text rendered with `jinja2.sandbox.ImmutableSandboxedEnvironment` and
`jinja2.StrictUndefined`, so a template can neither reach Python internals nor silently print
an empty string for a misspelled variable. Every Jinja failure becomes a `cpo.errors.ModelError`
naming the template file and line.

Merge tags: per-customer details are filled in later, in SQL, per customer. The tags are
exactly those configured in ``vars.messages.merge_tags`` (``cpo.yml``); there is no built-in
list. Templates write them exactly as they should appear in the
stored message, ``{{ first_name }}``: every merge tag is pre-defined as a variable whose value is
its own tag text, so rendering leaves ``{{ first_name }}`` in the output unchanged for the SQL
stage. Merge tags are placeholders, not data: print them as they are, never filter or test them
(``{{ first_name | upper }}`` would print ``{{ FIRST_NAME }}``). A caller may not pass a variable
with a merge tag's name. ``{% raw %}...{% endraw %}`` also works for literal braces.

Optional tags: ``{{ tag('greeting', 'Hello,') }}`` prints the ``greeting`` tag when the project
configures it and the text ``Hello,`` otherwise, so one template serves projects with and
without that tag. A missing *value* never leaves a dangling word: give the tag a fallback in
``cpo.yml`` (possibly empty) and put the words around the value in the tag's SQL, e.g.
``greeting: {sql: "'Hi ' || c.first_name || ','", fallback: "Hello,"}`` renders "Hi Ana," or
"Hello,". ``merge_tags`` lists the configured tags (``{{ merge_tags | join(', ') }}``).

Layout of ``prompts/`` (see ``prompts/README.md``): each variant kind has three paired files,
``tones/<tone>/{instructions,compose,subject}.txt``, and the control message has the same three
under ``control/``; `variant_template` maps a tone and a part to its file name.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from cpo.errors import ModelError

CONTROL = "control"
VARIANT_PARTS = ("instructions", "compose", "subject")
"""``instructions``: tone guidance for an LLM (included by ``generation.txt``); ``compose``: the
offline composer's body template; ``subject``: the offline composer's subject pattern."""

_STRING_TEMPLATE = "<template>"


def variant_template(tone: str, part: str) -> str:
    """Return the template name (relative to ``prompts/``) of one part of a tone's files.

    Args:
        tone: A tone name (``friendly``, ``urgent``, ...) or ``control`` for the control message.
        part: One of `VARIANT_PARTS`.

    Returns:
        ``control/<part>.txt`` for the control, else ``tones/<tone>/<part>.txt``.
    """
    if part not in VARIANT_PARTS:
        raise ModelError(f"unknown template part {part!r}; expected one of {VARIANT_PARTS}")
    if tone == CONTROL:
        return f"{CONTROL}/{part}.txt"
    return f"tones/{tone}/{part}.txt"


def merge_tag(name: str) -> str:
    """Return the literal merge-tag text for ``name`` (``{{ first_name }}``)."""
    return "{{ " + name + " }}"


class PromptRenderer:
    """Renders the templates of one ``prompts/`` directory.

    Args:
        prompts_dir: The project's prompts directory.
        merge_tags: The configured merge tags (``vars.messages.merge_tags``), which render as
            themselves; any other name is an undefined variable.
    """

    def __init__(self, prompts_dir: str | Path, merge_tags: Iterable[str] = ()) -> None:
        self.prompts_dir = Path(prompts_dir)
        self.merge_tags = tuple(merge_tags)
        loader = jinja2.FileSystemLoader(str(self.prompts_dir), encoding="utf-8")
        self._env = _environment(loader, self.merge_tags)

    def render(self, name: str, /, **variables: Any) -> str:
        """Render the template ``name`` (relative to the prompts dir) with ``variables``.

        Raises:
            ModelError: The template is missing, has a syntax error, uses an undefined variable
                or reaches for something the sandbox forbids; the message names file and line.
        """
        _check_no_merge_tag_override(variables, self.merge_tags, self._display(name))
        try:
            template = self._env.get_template(name)
            return template.render(**variables)
        except jinja2.TemplateError as e:
            raise _model_error(e, self._display(name), self.prompts_dir) from e

    def source(self, name: str) -> str:
        """Return the raw text of the template ``name``, unrendered.

        Raises:
            ModelError: The template does not exist.
        """
        try:
            text, _, _ = self._env.loader.get_source(self._env, name)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound as e:
            raise _model_error(e, self._display(name), self.prompts_dir) from e
        return text

    def exists(self, name: str) -> bool:
        """Whether the template ``name`` exists in the prompts dir."""
        try:
            self.source(name)
        except ModelError:
            return False
        return True

    def tones(self) -> tuple[str, ...]:
        """Return the tones that have a directory under ``prompts/tones/``, sorted."""
        tones_dir = self.prompts_dir / "tones"
        if not tones_dir.is_dir():
            return ()
        return tuple(sorted(p.name for p in tones_dir.iterdir() if p.is_dir()))

    def _display(self, name: str) -> str:
        return str(self.prompts_dir / name)


def render_template_text(
    source: str,
    /,
    *,
    template_name: str = _STRING_TEMPLATE,
    merge_tags: Iterable[str] = (),
    **variables: Any,
) -> str:
    """Render template text (not a file) in the same sandbox, e.g. a template passed in params.

    Args:
        source: The template text.
        template_name: What to call the template in errors (its file, when it came from one).
        merge_tags: The merge tags that render as themselves.
        **variables: Template variables.

    Raises:
        ModelError: As `PromptRenderer.render`, naming ``template_name``.
    """
    tags = tuple(merge_tags)
    _check_no_merge_tag_override(variables, tags, template_name)
    env = _environment(None, tags)
    try:
        return env.from_string(source).render(**variables)
    except jinja2.TemplateError as e:
        raise _model_error(e, template_name, None) from e


def _environment(loader: jinja2.BaseLoader | None, merge_tags: tuple[str, ...]) -> Any:
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.globals.update({tag: merge_tag(tag) for tag in merge_tags})
    env.globals["merge_tags"] = [merge_tag(tag) for tag in merge_tags]

    def optional_tag(name: str, otherwise: str = "") -> str:
        return merge_tag(name) if name in merge_tags else str(otherwise)

    env.globals["tag"] = optional_tag
    env.globals["variant_template"] = variant_template
    return env


def _check_no_merge_tag_override(variables: dict[str, Any], tags: tuple[str, ...], where: str):
    clash = sorted(set(variables) & set(tags))
    if clash:
        raise ModelError(
            f"variable(s) {', '.join(clash)} are merge tags, filled per customer in SQL; "
            "do not pass them when rendering a template",
            path=where,
        )


def _model_error(error: jinja2.TemplateError, name: str, base: Path | None) -> ModelError:
    if isinstance(error, jinja2.TemplateSyntaxError):
        path = _resolve(error.filename, base) if error.filename else name
        return ModelError(f"template syntax error: {error.message}", path=path, line=error.lineno)
    if isinstance(error, jinja2.TemplateNotFound):
        return ModelError(
            f"template {error.name!r} not found; create it or fix the name "
            "(see prompts/README.md for the layout)",
            path=name,
        )
    path, line = _runtime_location(error, name, base)
    if isinstance(error, SecurityError):
        message = f"template tried to reach something the sandbox forbids: {error}"
    elif isinstance(error, jinja2.UndefinedError):
        message = (
            f"undefined variable: {error.message}; pass it when rendering or fix the template "
            "(see prompts/README.md for the variables available). A merge tag must be listed "
            "in vars.messages.merge_tags in cpo.yml; write {{ tag('name', 'text if absent') }} "
            "for a tag some projects do not have"
        )
    else:
        message = f"template error: {error}"
    return ModelError(message, path=path, line=line)


def _runtime_location(error: BaseException, name: str, base: Path | None) -> tuple[str, int | None]:
    # Jinja rewrites tracebacks so that template frames carry the template's file and line; the
    # innermost such frame is where the error happened (possibly inside an included file).
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == _STRING_TEMPLATE:
            return name, frame.lineno
        if base is not None and _is_under(frame.filename, base):
            return frame.filename, frame.lineno
    return name, None


def _resolve(filename: str, base: Path | None) -> str:
    if filename == _STRING_TEMPLATE or base is None:
        return filename
    return filename if Path(filename).is_absolute() else str(base / filename)


def _is_under(filename: str, base: Path) -> bool:
    try:
        Path(filename).resolve().relative_to(base.resolve())
    except (ValueError, OSError):
        return False
    return True
