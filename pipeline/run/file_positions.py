"""Where a value of a parsed YAML file was written: the line of each key path, so that an error names
the file, the line and the key (`pipeline.yaml:12: devices.pi5.url: ...`)."""

from __future__ import annotations

import yaml

from bbdeploy.errors import BBDeployError


class Where:
    """Line numbers of the parsed YAML, by key path, for error messages."""

    def __init__(self, source: str, node: yaml.Node | None):
        self.source = source
        self.lines: dict[tuple, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[(*path, key.value)] = key.start_mark.line + 1
                self._walk(value, (*path, key.value))
                self.lines[(*path, key.value)] = key.start_mark.line + 1  # the key's line, not its value's
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def error(self, path: tuple, message: str) -> BBDeployError:
        for cut in range(len(path), -1, -1):  # the nearest key that has a line
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        key = ".".join(str(part) for part in path) or "(top level)"
        return BBDeployError(f"{self.source}:{line}: {key}: {message}")
