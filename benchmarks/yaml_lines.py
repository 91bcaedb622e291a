"""YAML loading that remembers where each value was written, so validation errors can name the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Location = tuple[str | int, ...]


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Location, int]]:
    """Parse a YAML file; return the data and a map from each value's path to its 1-based line number."""
    text = Path(path).read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    lines: dict[Location, int] = {}
    if root is not None:
        _walk(root, (), lines)
    data = yaml.safe_load(text)
    return data, lines


def _walk(node: yaml.Node, location: Location, lines: dict[Location, int]) -> None:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = location + (key_node.value,)
            _walk(value_node, child, lines)
            # A key's own line is where a misspelt key is reported.
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, location + (index,), lines)


def line_of(location: Location, lines: dict[Location, int]) -> int | None:
    """The line of the deepest known prefix of ``location``."""
    for end in range(len(location), -1, -1):
        found = lines.get(tuple(location[:end]))
        if found is not None:
            return found
    return None
