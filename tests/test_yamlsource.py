"""YAML files are composed by libyaml when PyYAML has it, with the same result as PyYAML's own
parser, and a document libyaml's recursive composer could not survive never reaches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensor.yamlsource import MAX_FAST_DEPTH, SourceError, load_yaml

REPO = Path(__file__).resolve().parents[1]
FILES = [*sorted((REPO / "signatures").glob("*.yaml")), REPO / "deploy" / "rmm-sensor.yaml"]


def test_pyyaml_here_has_libyaml() -> None:
    # The fast path is what runs in the field; the test environment must exercise it.
    assert hasattr(yaml, "CSafeLoader"), "PyYAML was built without libyaml"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_libyaml_and_pyyaml_give_the_same_values_and_lines(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    composed_by: list[Any] = []
    compose = yaml.compose

    def spy(text: str, Loader: Any) -> Any:
        composed_by.append(Loader)
        return compose(text, Loader=Loader)

    monkeypatch.setattr(yaml, "compose", spy)
    fast = load_yaml(str(path))
    assert composed_by == [yaml.CSafeLoader]
    monkeypatch.delattr(yaml, "CSafeLoader")
    assert load_yaml(str(path)) == fast
    assert composed_by[1:] == [yaml.SafeLoader]


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "a: " + "{b: " * 100_000 + "1" + "}" * 100_000,
        "".join(" " * i + "- \n" for i in range(3_000)),
    ],
    ids=["lists", "maps", "block-lists"],
)
def test_nesting_that_would_crash_libyaml_composer_is_refused(text: str, tmp_path: Path) -> None:
    # In a child: libyaml's composer would end the process, not raise.
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    code = (
        "import sys; from sensor.yamlsource import load_yaml, SourceError\n"
        "try: load_yaml(sys.argv[1])\n"
        "except SourceError as exc: print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{path}:0: invalid YAML: nested too deeply"


def test_the_deepest_document_libyaml_composes_loads() -> None:
    depth = MAX_FAST_DEPTH
    loaded = load_yaml("x.yaml", "[" * depth + "1" + "]" * depth)
    for _ in range(depth):
        assert isinstance(loaded.value, list)
        loaded = loaded.value[0]
    assert loaded.value == 1


def test_an_error_libyaml_finds_is_reported_in_pyyaml_words() -> None:
    # libyaml says "mapping values are not allowed in this context".
    expected = r"^x\.yaml:2: invalid YAML: mapping values are not allowed here$"
    with pytest.raises(SourceError, match=expected):
        load_yaml("x.yaml", "a: 1\nb: c: d\n")
