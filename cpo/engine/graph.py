"""The DAG of nodes: parents, children, topological order, cycles and node selection.

Selection grammar (dbt's): space-separated terms are a union, comma-separated parts of a term an
intersection. A part is ``[n+]method:value[+n]``: ``+`` before means ancestors (``2+`` two levels),
after means descendants; methods are a bare name (shell globs allowed), ``tag:`` and ``path:``.
"""

from __future__ import annotations

import difflib
import fnmatch
import graphlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from cpo.engine.nodes import TEST, Node
from cpo.errors import ModelError, UsageError

_PART = re.compile(r"^(?:(\d*)\+)?(?:(tag|path|resource_type):)?([^+]+?)(?:\+(\d*))?$")


@dataclass(frozen=True)
class Graph:
    """Nodes (seeds, models, steps) and tests with their dependencies."""

    nodes: Mapping[str, Node]
    tests: Mapping[str, Node]

    @classmethod
    def build(cls, nodes: Iterable[Node], tests: Iterable[Node]) -> Graph:
        """Check every ref resolves and that there is no cycle.

        Raises:
            ModelError: an unknown ref (naming the node and its file) or a cycle (naming it).
        """
        by_name = {n.name: n for n in nodes}
        for node in [*by_name.values(), *tests]:
            for parent in node.depends_on:
                if parent not in by_name:
                    close = difflib.get_close_matches(parent, list(by_name), n=3)
                    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                    raise ModelError(
                        f"{node.name} refers to {parent!r}, which is not a model, seed or "
                        f"step of this project (or is disabled){hint}",
                        path=str(node.path),
                        line=_line_of(node.raw, parent),
                        node=node.name,
                    )
        order = {name: i for i, name in enumerate(cls(by_name, {}).order(list(by_name)))}
        tests = [_attach_singular(t, order) for t in tests]
        return cls(by_name, {t.name: t for t in tests})

    def parents(self, name: str) -> tuple[str, ...]:
        """Direct parents of a node or test."""
        node = self.nodes.get(name) or self.tests[name]
        return node.depends_on

    def children_map(self) -> dict[str, set[str]]:
        """Direct children of every node (tests excluded)."""
        children: dict[str, set[str]] = {name: set() for name in self.nodes}
        for node in self.nodes.values():
            for parent in node.depends_on:
                children[parent].add(node.name)
        return children

    def order(self, names: Iterable[str]) -> list[str]:
        """Topological order of the given nodes (dependencies first, ties by name)."""
        wanted = set(names)
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for name in sorted(wanted):
            sorter.add(name, *sorted(p for p in self.nodes[name].depends_on if p in wanted))
        try:
            sorter.prepare()
        except graphlib.CycleError as e:
            cycle = e.args[1]
            raise ModelError(
                "dependency cycle: " + " -> ".join(cycle) + "; remove one of these ref()s",
                path=str(self.nodes[cycle[0]].path),
                node=cycle[0],
            ) from None
        ordered: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            ordered.extend(ready)
            sorter.done(*ready)
        return ordered

    def ancestors(self, name: str, depth: int | None = None) -> set[str]:
        """All ancestors of a node, or those within `depth` levels."""
        return self._walk(name, lambda n: self.nodes[n].depends_on, depth)

    def descendants(self, name: str, depth: int | None = None) -> set[str]:
        """All descendants of a node, or those within `depth` levels."""
        children = self.children_map()
        return self._walk(name, lambda n: tuple(children[n]), depth)

    @staticmethod
    def _walk(start: str, step, depth: int | None) -> set[str]:
        seen: set[str] = set()
        frontier = {start}
        level = 0
        while frontier and (depth is None or level < depth):
            frontier = {n for f in frontier for n in step(f)} - seen
            seen |= frontier
            level += 1
        return seen

    def select(
        self,
        select: Sequence[str] | None,
        exclude: Sequence[str] | None = None,
        *,
        available: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[list[str], list[str]]:
        """Resolve selectors to (nodes in topological order, tests to run).

        A test runs when named itself, or when the node it is attached to is selected and
        every other node it reads is selected too or `available` (already built).

        Raises:
            UsageError: a selector names nothing in the project.
        """
        names = self._resolve(select) if select else set(self.nodes) | set(self.tests)
        excluded = self._resolve(exclude) if exclude else set()
        names -= excluded
        chosen_nodes = {n for n in names if n in self.nodes}
        # A test goes with what it tests: excluding a node excludes the tests that read it.
        tests = sorted(
            t.name
            for t in self.tests.values()
            if t.name not in excluded
            and not excluded.intersection(t.depends_on)
            and (
                t.name in names
                or (
                    t.test is not None
                    and t.test.model in chosen_nodes
                    and set(t.depends_on) <= chosen_nodes | set(available)
                )
            )
        )
        return self.order(chosen_nodes), tests

    def _resolve(self, selectors: Sequence[str]) -> set[str]:
        result: set[str] = set()
        for term in " ".join(selectors).split():
            parts = [self._resolve_part(p) for p in term.split(",") if p]
            result |= set.intersection(*parts) if parts else set()
        return result

    def _resolve_part(self, part: str) -> set[str]:
        match = _PART.match(part)
        if not match:
            raise UsageError(f"cannot parse selector {part!r}; expected e.g. model, +model+, tag:x")
        up, method, value, down = match.groups()
        roots = self._match(method, value, part)
        result = set(roots)
        for root in roots:
            if root not in self.nodes:
                continue
            if up is not None:
                result |= self.ancestors(root, int(up) if up else None)
            if down is not None:
                result |= self.descendants(root, int(down) if down else None)
        return result

    def _match(self, method: str | None, value: str, part: str) -> set[str]:
        everything = {**self.nodes, **self.tests}
        if method == "tag":
            found = {n for n, node in everything.items() if value in node.tags}
        elif method == "path":
            prefix = value.rstrip("/")
            found = {
                n
                for n, node in everything.items()
                if node.resource_type != TEST
                and (
                    str(node.path) == prefix
                    or str(node.path).startswith(prefix + "/")
                    or fnmatch.fnmatch(str(node.path), value)
                )
            }
        elif method == "resource_type":
            found = {n for n, node in everything.items() if node.resource_type == value}
        else:
            found = {n for n in everything if fnmatch.fnmatchcase(n, value)}
        if not found:
            close = difflib.get_close_matches(value, list(everything), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UsageError(f"--select/--exclude {part!r} matches no node{hint}")
        return found


def _attach_singular(test: Node, order: Mapping[str, int]) -> Node:
    """A singular test belongs to the last node it reads: it checks what that node built."""
    if not test.test or test.test.kind != "singular" or not test.depends_on:
        return test
    last = max(test.depends_on, key=order.__getitem__)
    return test.with_(test=replace(test.test, model=last))


def _line_of(raw: str, name: str) -> int | None:
    for number, line in enumerate(raw.splitlines(), start=1):
        if re.search(r"""ref\(\s*['"]""" + re.escape(name) + "['\"]", line):
            return number
    return None
