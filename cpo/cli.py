"""The command line: parse, call the `Project` method of the same name, print.

Exit codes: 0 success; 1 a handled failure (a node or test failed, bad input); 2 a usage
error or a crash (a bug: the traceback is shown).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from cpo.artifacts import NodeResult
from cpo.config import parse_cli_vars
from cpo.errors import CPOError, UsageError
from cpo.project import Project, RunResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUS_STYLE = {
    "success": ("OK", "green"),
    "pass": ("PASS", "green"),
    "warn": ("WARN", "yellow"),
    "fail": ("FAIL", "red"),
    "error": ("ERROR", "red"),
    "skipped": ("SKIP", "yellow"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to generate the CLI reference in the README)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", default=".", help="project folder (default: .)")
    common.add_argument("--target", help="target from cpo.yml (default: its 'target:')")
    common.add_argument("--vars", help="JSON/YAML mapping merged over cpo.yml vars")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--log-format", choices=["json", "text"], default="json",
                        help="format of logs/cpo.log (default: json)")
    selecting = argparse.ArgumentParser(add_help=False)
    selecting.add_argument("-s", "--select", nargs="+", help="nodes to include (dbt syntax)")
    selecting.add_argument("--exclude", nargs="+", help="nodes to leave out")
    running = argparse.ArgumentParser(add_help=False)
    running.add_argument("--full-refresh", action="store_true",
                         help="rebuild incremental models from scratch")
    running.add_argument("--fail-fast", action="store_true",
                         help="stop at the first failure")
    running.add_argument("--max-cost", type=float, help="budget cap in USD for paid calls")

    parser = argparse.ArgumentParser(prog="cpo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = commands.add_parser
    add("build", parents=[common, selecting, running], help="seed, run and test in DAG order")
    add("run", parents=[common, selecting, running], help="run models and Python steps")
    add("seed", parents=[common, selecting, running], help="load seeds")
    add("test", parents=[common, selecting], help="run data tests on the current database")
    add("compile", parents=[common, selecting], help="write compiled SQL to target/")
    ls = add("ls", parents=[common, selecting], help="list nodes")
    ls.add_argument("--output", choices=["name", "path", "json"], default="name")
    show = add("show", parents=[common], help="preview a model or a query")
    show.add_argument("-s", "--select", help="model to preview")
    show.add_argument("--inline", help="SQL query to preview")
    show.add_argument("--limit", type=int, default=10)
    add("clean", parents=[common], help="delete target/ and logs/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = build_parser().parse_args(argv)
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return COMMANDS[args.command](args, console)
    except CPOError as e:
        if args.debug:
            errors.print(escape(traceback.format_exc()))
        errors.print(f"[red]Error:[/red] {escape(str(e))}")
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:
        errors.print("[red]Interrupted[/red]: cpo.duckdb was left as it was")
        return EXIT_FAILED


def _project(args: argparse.Namespace, console: Console) -> Project:
    project = Project.load(
        args.project_dir,
        target=args.target,
        vars=parse_cli_vars(args.vars),
        full_refresh=getattr(args, "full_refresh", False),
        max_cost_usd=getattr(args, "max_cost", None),
        log_format=args.log_format,
    )
    project.on_result = _printer(console)
    return project


def _printer(console: Console):
    count = 0

    def print_result(result: NodeResult) -> None:
        nonlocal count
        count += 1
        label, style = STATUS_STYLE.get(result.status, (result.status.upper(), "white"))
        detail = result.message.splitlines()[0] if result.message else ""
        console.print(
            f"{count:4} [{style}]{label:5}[/{style}] {result.resource_type:6} "
            f"{escape(result.name)}  {escape(detail)}  [dim]{result.seconds:.2f}s[/dim]"
        )
        if result.failed:
            for line in result.message.splitlines()[1:]:
                console.print(f"{'':18}{escape(line)}")

    return print_result


def _summary(console: Console, run: RunResult) -> int:
    counts: dict[str, int] = {}
    for result in run.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing selected"
    if run.success:
        console.print(f"[green]Done[/green] in {run.seconds:.1f}s: {parts}. "
                      f"Database: {run.database.name}")
        return EXIT_OK
    failed = [r for r in run.results if r.failed]
    console.print(f"[red]Failed[/red] in {run.seconds:.1f}s: {parts}.")
    for result in failed:
        console.print(f"  [red]{escape(result.name)}[/red]: {escape(result.message)}")
    if run.command != "test":
        console.print(f"{run.database.name} was left unchanged.")
    return EXIT_FAILED


def _run_command(verb: str):
    def command(args: argparse.Namespace, console: Console) -> int:
        project = _project(args, console)
        method = getattr(project, verb)
        kwargs: dict[str, Any] = {} if verb == "test" else {"fail_fast": args.fail_fast}
        return _summary(console, method(args.select, args.exclude, **kwargs))

    return command


def _compile(args: argparse.Namespace, console: Console) -> int:
    paths = _project(args, console).compile(args.select, args.exclude)
    for name, path in paths.items():
        console.print(f"{escape(name)}: {path}")
    console.print(f"Compiled {len(paths)} node(s) into target/compiled/")
    return EXIT_OK


def _ls(args: argparse.Namespace, console: Console) -> int:
    nodes = _project(args, console).ls(args.select, args.exclude)
    if args.output == "json":
        for node in nodes:
            print(json.dumps({"name": node.name, "resource_type": node.resource_type,
                              "path": str(node.path), "depends_on": list(node.depends_on),
                              "materialized": node.materialized, "tags": list(node.tags)}))
    else:
        for node in nodes:
            print(node.path if args.output == "path" else node.name)
    return EXIT_OK


def _show(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    columns, rows = _project(args, console).show(args.select, args.inline, args.limit)
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*("" if v is None else escape(str(v)) for v in row))
    console.print(table)
    return EXIT_OK


def _clean(args: argparse.Namespace, console: Console) -> int:
    for path in _project(args, console).clean():
        console.print(f"removed {path}")
    return EXIT_OK


COMMANDS = {
    "build": _run_command("build"),
    "run": _run_command("run"),
    "seed": _run_command("seed"),
    "test": _run_command("test"),
    "compile": _compile,
    "ls": _ls,
    "show": _show,
    "clean": _clean,
}


def entrypoint() -> None:
    """Console-script entry: exit with `main`'s code; crashes print a traceback, exit 2."""
    try:
        code = main()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        sys.stderr.write("This is a bug in CPO: please report it with the traceback above.\n")
        code = EXIT_USAGE
    sys.exit(code)
