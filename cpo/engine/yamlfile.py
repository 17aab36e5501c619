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


# Anchors and aliases are fine for sharing a block or two; a document whose aliases expand to
# more than this many nodes is refused before anything walks it (a "billion laughs" bomb).
MAX_EXPANDED_NODES = 100_000


def decode_utf8(data: bytes, shown: str) -> str:
    """Decode a project file as UTF-8; a bad byte is reported with its real line and column.

    Raises:
        ConfigurationError: naming the file, the line, the column and the byte.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigurationError(
            f"column {column}: byte 0x{data[e.start]:02x} is not UTF-8 (the file looks like "
            "Latin-1 or Windows-1252); save it as UTF-8",
            path=shown,
            line=line,
        ) from None


# libyaml's parser when PyYAML has it (about 10x faster; the same nodes, marks and errors).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, *, display_path: str | None = None) -> YamlDocument:
    """Parse a YAML file, raising ConfigurationError with the line of a syntax error.

    Files must be UTF-8; duplicate keys and alias bombs are refused.
    """
    shown = display_path or str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"cannot read file: {e.strerror}", path=shown) from e
    text = decode_utf8(raw, shown)
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, shown)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigurationError(
            f"invalid YAML: {problem}", path=shown, line=mark.line + 1 if mark else None
        ) from e
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines, shown)
    return YamlDocument(Path(shown), data if data is not None else {}, lines)


def _check_size(root: yaml.Node, shown: str) -> None:
    """Refuse recursive aliases and documents whose aliases expand beyond `MAX_EXPANDED_NODES`."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigurationError(
                "a YAML alias refers to its own anchor (a recursive structure); remove it",
                path=shown,
                line=node.start_mark.line + 1,
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise ConfigurationError(
                    f"YAML anchors and aliases expand to more than {MAX_EXPANDED_NODES:,} values "
                    "(an alias bomb?); write the values out or use fewer aliases",
                    path=shown,
                    line=node.start_mark.line + 1,
                )
        active.discard(key)
        sizes[key] = total
        return total

    size(root)


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int], shown: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            if name in seen and name != "<<":
                raise ConfigurationError(
                    f"duplicate key {name!r} (the second one would silently win); keep one",
                    path=shown,
                    line=key_node.start_mark.line + 1,
                    key=f"{prefix}.{name}" if prefix else name,
                )
            seen.add(name)
            key = f"{prefix}.{name}" if prefix else name
            lines.setdefault(key, key_node.start_mark.line + 1)
            _collect_lines(value_node, key, lines, shown)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}.{index}" if prefix else str(index)
            lines.setdefault(key, item.start_mark.line + 1)
            _collect_lines(item, key, lines, shown)
