"""YAML loading that refuses a key given twice in one mapping (PyYAML silently keeps the last value).

A `params.yaml` with two `lr:` lines, or two `train:` sections, would train with whichever came last without a
word; `UniqueKeySafeLoader` (a `yaml.SafeLoader`) names the dotted key and both lines instead.
"""

from __future__ import annotations

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping in params.yaml names one key twice (YAML would silently keep the last value)."""


class UniqueKeySafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated within one mapping, naming its dotted path and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The mapping, or DuplicateKeyError at the second occurrence of a key."""
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join([*self._path_to(node), str(key)])
                raise DuplicateKeyError(
                    f"{where}: key given twice (lines {seen[key]} and {line}); YAML would silently keep the last"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _path_to(self, target: yaml.Node) -> list[str]:
        """Dotted key path from the document root to a mapping node (for the message)."""

        def walk(node: yaml.Node, trail: list[str]) -> list[str] | None:
            if node is target:
                return trail
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    found = walk(value_node, [*trail, str(getattr(key_node, "value", "?"))])
                    if found is not None:
                        return found
            return None

        found = walk(self._root, []) if self._root is not None else None
        return found or []

    def construct_document(self, node: yaml.Node) -> object:
        """Remember the document's root node for `_path_to`."""
        self._root = node
        return super().construct_document(node)

    _root: yaml.Node | None = None
