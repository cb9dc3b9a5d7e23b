"""YAML loading that remembers where every mapping, list and value came from.

Configuration and signature errors must name the file and line. PyYAML's node marks carry the
line; this loader keeps it next to each constructed object so validators can point at the
offending key without re-parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


class SourceError(Exception):
    """A problem in a YAML file, located by file and line (1-based)."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Located:
    """A scalar, list or mapping with the line it started on."""

    value: Any  # dict[str, Located] | list[Located] | str | int | float | bool | None
    line: int


def load_yaml(path: str, text: str | None = None) -> Located:
    """Parse one YAML document into :class:`Located` values (no custom tags, no aliases)."""
    if text is None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise SourceError(path, 0, exc.strerror or str(exc)) from exc
        except UnicodeDecodeError as exc:
            raise SourceError(path, 0, f"not UTF-8 text: {exc.reason}") from exc
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise SourceError(path, line, f"invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise SourceError(path, 0, f"invalid YAML: {exc}") from exc
    except ValueError as exc:
        # int() refuses the over-long version number of a "%YAML 1.999..." directive.
        raise SourceError(path, 0, f"invalid YAML: {exc}") from exc
    except RecursionError as exc:
        # PyYAML's composer recurses once per nesting level ("[[[[...").
        raise SourceError(path, 0, "invalid YAML: nested too deeply") from exc
    if node is None:
        return Located({}, 1)
    # One loader over an empty stream builds every scalar: its reader would reject the
    # values' own characters, and making one per scalar took most of the conversion's time.
    scalars = yaml.SafeLoader("")
    try:
        return _convert(node, path, set(), scalars)
    except RecursionError as exc:
        raise SourceError(path, 0, "invalid YAML: nested too deeply") from exc


# Deeper documents are composed by PyYAML alone (see _compose); real files nest a few levels.
MAX_FAST_DEPTH = 64


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree: composed by libyaml when PyYAML has it (ten times faster, and
    signature files are read at every start), else by PyYAML's own parser.

    libyaml's composer recurses in C once per nesting level, beyond Python's recursion limit: a
    deep enough document would crash the interpreter. So the nesting is measured first on
    libyaml's event stream (no recursion), and a deeper document, or one libyaml finds an error
    in, goes to PyYAML's composer: it refuses what is too deep (RecursionError), and its error
    messages stay the same whichever parser is installed.
    """
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None and _shallow(text, fast):
        try:
            return yaml.compose(text, Loader=fast)
        except (yaml.YAMLError, ValueError):
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _shallow(text: str, loader: type) -> bool:
    """Whether no collection nests deeper than MAX_FAST_DEPTH, by libyaml's events (False when
    libyaml finds an error: PyYAML reports it)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_FAST_DEPTH:
                    return False
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except (yaml.YAMLError, ValueError):
        return False
    return True


def _convert(
    node: yaml.Node,
    path: str,
    seen: set[int],
    scalars: yaml.SafeLoader,
    where: str = "(top level)",
) -> Located:
    """``where`` is the key path (``sanctioned[0].expires``) so value errors can name it.

    ``seen`` holds the nodes converted so far: an alias is the same node again, and expanding
    nested aliases would take exponential time and memory ("billion laughs").
    """
    line = node.start_mark.line + 1
    if id(node) in seen:
        raise SourceError(path, line, f"{where}: YAML aliases are not supported")
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError(path, key_node.start_mark.line + 1, "keys must be plain strings")
            key = str(key_node.value)
            inner = key if where == "(top level)" else f"{where}.{key}"
            if key in out:
                raise SourceError(path, key_node.start_mark.line + 1, f"{inner}: duplicate key")
            out[key] = _convert(value_node, path, seen, scalars, inner)
        return Located(out, line)
    if isinstance(node, yaml.SequenceNode):
        return Located(
            [
                _convert(item, path, seen, scalars, f"{where}[{i}]")
                for i, item in enumerate(node.value)
            ],
            line,
        )
    if isinstance(node, yaml.ScalarNode):
        try:
            value = scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # PyYAML raises ValueError for a scalar that looks like a date but is none (2024-02-30),
            # and its safe constructors fail on explicitly tagged scalars they cannot read with
            # KeyError (!!bool x), IndexError (!!int "") or AttributeError (!!timestamp x).
            raise SourceError(path, line, f"{where}: bad value {node.value!r}: {exc}") from exc
        return Located(value, line)
    raise SourceError(path, line, "unsupported YAML node")


def plain(loc: Located) -> Any:
    """Strip locations (for values whose lines are no longer needed)."""
    v = loc.value
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v
