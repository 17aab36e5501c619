"""The personalisation domain as a plugin of the engine (`cpo.engine.plugins`).

It declares its ``vars`` sections, gives models their Jinja globals (``sources``, segment rules,
merge tags, content rules), adds the ``init`` command, and names the run parameters worth
tracking (segmentation method, tones).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from cpo.engine.plugins import CliCommand, hookimpl


@hookimpl
def cpo_vars_sections() -> dict[str, Any]:
    """``as_of_date``, ``retrieval``, ``generation``, ``safety``, ``segmentation``,
    ``messages`` and ``content``."""
    from cpo.personalization import segmentation, settings

    return {**settings.VARS_SECTIONS, **segmentation.VARS_SECTIONS}


@hookimpl
def cpo_settings_sections() -> dict[str, Any]:
    """``sources``: the input contract, checked when ``cpo.yml`` loads."""
    from cpo.personalization.sources_spec import SourcesSettings

    return {"sources": SourcesSettings}


@hookimpl
def cpo_jinja_globals(config: Any) -> dict[str, Any]:
    """``sources``, ``segment_rules``, ``merge_tag_sql``, ``content_rules``, ``feature_columns``."""
    from cpo.personalization.segmentation import jinja_globals

    return jinja_globals(config)


@hookimpl
def cpo_prompt_renderer(config: Any) -> Any:
    """The sandboxed renderer of ``prompts/``, which knows the project's merge tags."""
    from cpo.personalization.prompting import PromptRenderer
    from cpo.personalization.segmentation import merge_tag_names

    return PromptRenderer(config.path("prompts"), merge_tags=merge_tag_names(config))


@hookimpl
def cpo_tracking_params(config: Any) -> dict[str, Any]:
    """The segmentation method and the tones of a run."""
    return {
        "segmentation_method": _var(config.vars, "segmentation", "method"),
        "tones": _var(config.vars, "generation", "tones"),
    }


@hookimpl
def cpo_cli_commands() -> list[CliCommand]:
    """``init``: a starter ``sources:`` block guessed from a customers (or content) file."""
    return [
        CliCommand(
            name="init",
            help="print a starter sources: block guessed from a customers file",
            arguments=_init_arguments,
            run=_init,
        )
    ]


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", help="the customers file (CSV, Parquet, JSON, DuckDB)")
    parser.add_argument("--content", help="the content file (CSV, Parquet, JSON, DuckDB)")
    parser.add_argument(
        "--table", help="with a DuckDB file that holds several tables: the one to read"
    )


def _init(args: argparse.Namespace, console: Any) -> int:
    from cpo.errors import UsageError
    from cpo.personalization.init import init_text

    if not args.customers and not args.content:
        raise UsageError("init needs --customers FILE (or --content FILE)")
    for name in ("customers", "content"):
        if getattr(args, name):
            print(init_text(getattr(args, name), name=name, table=args.table))
    return 0


def _var(variables: Mapping[str, Any], *path: str) -> Any:
    value: Any = variables
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@hookimpl
def cpo_prepare_build(config: Any, db: Any) -> None:
    """Attach the DuckDB files that ``sources:`` read tables from."""
    from cpo.personalization.sources import attach_sources

    attach_sources(config, db)
