"""Reading YAML files with line numbers, so errors can point at the line to fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cpo.errors import ConfigurationError


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file and the line of every key path in it (``a.b.0.c`` -> line)."""

    path: Path
    data: Any
    lines: dict[str, int]

    def line_of(self, key_path: str) -> int | None:
        """Return the line of `key_path`, or of its nearest ancestor that has one."""
        parts = key_path.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line:
                return line
            parts.pop()
        return None

    def error(self, key_path: str, message: str) -> ConfigurationError:
        """Build a ConfigurationError that names this file, the key path and its line."""
        return ConfigurationError(
            message, path=str(self.path), line=self.line_of(key_path), key=key_path
        )


def read_yaml(path: Path, *, display_path: str | None = None) -> YamlDocument:
    """Parse a YAML file, raising ConfigurationError with the line of a syntax error."""
    shown = display_path or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigurationError(f"cannot read file: {e.strerror}", path=shown) from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigurationError(
            f"invalid YAML: {problem}", path=shown, line=mark.line + 1 if mark else None
        ) from e
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines)
    return YamlDocument(Path(shown), data if data is not None else {}, lines)


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}.{index}" if prefix else str(index)
            lines[key] = item.start_mark.line + 1
            _collect_lines(item, key, lines)
