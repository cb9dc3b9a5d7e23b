"""sensor.frozen.fast_init: the same constructor as dataclasses generates, only quicker."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sensor.frozen import fast_init
from sensor.model import DnsSummary, FlowRecord, HttpSummary, TlsSummary
from sensor.protocols.dns import DnsAnswer, DnsMessage, DnsQuestion
from sensor.protocols.http import HttpRequest, HttpResponse
from sensor.protocols.tls import ClientHello, ServerHello, TlsStream

HOT = (FlowRecord, TlsSummary, DnsSummary, HttpSummary, ClientHello, ServerHello, TlsStream,
       HttpRequest, HttpResponse, DnsQuestion, DnsAnswer, DnsMessage)  # fmt: skip


def twins() -> tuple[type, type]:
    """Two identical frozen, slotted dataclasses; the first gets fast_init."""

    def make() -> type:
        @dataclasses.dataclass(frozen=True, slots=True)
        class Point:
            x: int
            y: str
            z: tuple[int, ...] = ()
            w: int | None = None

        return Point

    fast, plain = make(), make()
    fast_init(fast)
    return fast, plain


def as_tuple(obj: object) -> tuple[object, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1, "a"), {}),
        ((1, "a", (2,)), {}),
        ((1, "a", (2,), 3), {}),
        ((), {"y": "b", "x": 2}),
        ((5,), {"y": "c", "w": 7}),
    ],
)
def test_same_fields_as_the_generated_init(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    fast, plain = twins()
    assert as_tuple(fast(*args, **kwargs)) == as_tuple(plain(*args, **kwargs))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {}), ((1, "a", (), 2, 3), {}), ((1, "a"), {"x": 1}), ((1, "a"), {"v": 1})],
)
def test_same_errors_as_the_generated_init(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    fast, plain = twins()
    with pytest.raises(TypeError):
        plain(*args, **kwargs)
    with pytest.raises(TypeError):
        fast(*args, **kwargs)


def test_still_frozen_and_same_signature() -> None:
    fast, plain = twins()
    point = fast(1, "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    assert inspect.signature(fast) == inspect.signature(plain)
    assert fast.__init__.__qualname__ == f"{fast.__qualname__}.__init__"


def test_refuses_classes_it_cannot_build() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Hooked:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int = 0

    for cls in (Mutable, Hooked, Factory, NoSlots):
        with pytest.raises(ValueError, match=cls.__qualname__):
            fast_init(cls)


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_per_flow_classes_use_it_with_their_own_signature(cls: type) -> None:
    """The records built for every flow construct through fast_init, with the parameters and
    defaults their fields declare."""
    assert cls.__init__.__code__.co_filename == f"<fast_init of {cls.__qualname__}>"
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]
