"""The written-out constructors of the classes built for every flow (see sensor.frozen).

Each ``__init__`` must take the class's fields, in order, with their defaults, and store each
argument in its own field; the class must stay a frozen dataclass.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import pathlib
import sys
from typing import Any

import pytest

from sensor.model import DnsSummary, FlowRecord, HttpSummary, TlsSummary
from sensor.protocols.dns import DnsAnswer, DnsMessage, DnsQuestion
from sensor.protocols.http import HttpRequest, HttpResponse
from sensor.protocols.tls import ClientHello, ServerHello, TlsStream

HOT = (FlowRecord, TlsSummary, DnsSummary, HttpSummary, ClientHello, ServerHello, TlsStream,
       HttpRequest, HttpResponse, DnsQuestion, DnsAnswer, DnsMessage)  # fmt: skip


def declared_types(cls: type) -> list[str]:
    """Each field's annotation as written in the source (a compiled class keeps only
    ``tuple`` or ``type`` for most of them)."""
    module = sys.modules[cls.__module__]
    source = pathlib.Path(module.__file__ or "").with_name(
        cls.__module__.rsplit(".", 1)[-1] + ".py"
    )
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return [
                ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign)
            ]
    raise LookupError(cls.__qualname__)


def distinct_values(cls: type) -> tuple[Any, ...]:
    """A value of the right type for every field, no two alike where the type allows it."""
    counter = itertools.count(1)
    flip = itertools.cycle((True, False))
    values: list[Any] = []
    for declared in declared_types(cls):
        kind = declared.removesuffix(" | None")
        n = next(counter)
        if kind == "int":
            values.append(1000 + n)
        elif kind == "str":
            values.append(f"v{n}")
        elif kind == "bytes":
            values.append(b"b%d" % n)
        elif kind == "bool":
            values.append(next(flip))
        elif kind == "tuple[int, ...]":
            values.append((n,))
        elif kind == "tuple[str, ...]":
            values.append((f"t{n}",))
        elif kind == "tuple[bytes, ...]":
            values.append((b"t%d" % n,))
        elif kind.startswith("tuple["):
            values.append(())  # a tuple of other records: its own type tells it apart
        else:
            values.append(None)  # an optional record of another class
    assert len(values) == len(dataclasses.fields(cls))
    return tuple(values)


def as_tuple(obj: object) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_init_takes_the_fields_in_order_with_their_defaults(cls: type) -> None:
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_each_argument_lands_in_its_own_field(cls: type) -> None:
    values = distinct_values(cls)
    assert as_tuple(cls(*values)) == values
    by_name = {f.name: v for f, v in zip(dataclasses.fields(cls), values, strict=True)}
    assert as_tuple(cls(**by_name)) == values


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_still_a_frozen_dataclass(cls: type) -> None:
    values = distinct_values(cls)
    obj, twin = cls(*values), cls(*values)
    assert obj == twin and hash(obj) == hash(twin)
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, values[0])
    assert dataclasses.replace(obj) == obj


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_a_missing_argument_is_refused(cls: type) -> None:
    required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    with pytest.raises(TypeError):
        cls(*distinct_values(cls)[: len(required) - 1])


def test_defaults_fill_the_trailing_fields() -> None:
    values = distinct_values(FlowRecord)[:-3]
    record = FlowRecord(*values)
    assert (record.tls, record.dns, record.http) == (None, None, None)
    request = HttpRequest(*distinct_values(HttpRequest)[:-1])
    assert request.transfer_encoding is None
