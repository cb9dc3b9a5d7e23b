"""Pickling and fast construction for frozen dataclasses of the compiled modules.

Worker processes send flow records, sessions and settings through multiprocessing queues. A
frozen dataclass compiled by mypyc unpickles by setting its fields one by one, which ``frozen``
forbids; the reducer registered here rebuilds it through ``__init__`` instead.

A frozen dataclass's generated ``__init__`` stores each field with ``object.__setattr__``,
which looks the name up on the type every time: about 3 µs for a flow record's 26 fields,
paid once per flow. ``fast_init`` swaps in an ``__init__`` that stores through each field's
descriptor directly, with the same parameters and defaults.
"""

from __future__ import annotations

import copyreg
import dataclasses
from typing import Any


def picklable(*classes: type[Any]) -> None:
    for cls in classes:
        copyreg.pickle(cls, _rebuild)


def _rebuild(obj: Any) -> tuple[type[Any], tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


def fast_init(*classes: type[Any]) -> None:
    """Give frozen, slotted (or compiled) dataclasses an ``__init__`` that stores through the
    field descriptors.

    Only for plain field lists: positional-or-keyword fields with at most a constant default,
    and no ``__post_init__`` (a class that needs more keeps the generated one: ValueError).
    """
    for cls in classes:
        if not cls.__dataclass_params__.frozen or hasattr(cls, "__post_init__"):
            raise ValueError(f"{cls.__qualname__}: not a frozen dataclass without hooks")
        names: dict[str, Any] = {}
        signature: list[str] = []
        body: list[str] = []
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING or f.kw_only or not f.init:
                raise ValueError(f"{cls.__qualname__}.{f.name}: not a plain field")
            # A slot's descriptor (or a compiled class's attribute); a plain class has none.
            store = getattr(cls.__dict__.get(f.name), "__set__", None)
            if store is None:
                raise ValueError(f"{cls.__qualname__}.{f.name}: no descriptor to store through")
            names[f"_set_{f.name}"] = store
            if f.default is dataclasses.MISSING:
                signature.append(f.name)
            else:
                names[f"_default_{f.name}"] = f.default
                signature.append(f"{f.name}=_default_{f.name}")
            body.append(f"    _set_{f.name}(self, {f.name})")
        source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
        # Compiled text made from the field names alone, as dataclasses itself does.
        exec(compile(source, f"<fast_init of {cls.__qualname__}>", "exec"), names)
        init = names["__init__"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        init.__module__ = cls.__module__
        init.__annotations__ = dict(cls.__init__.__annotations__)  # the generated one's
        cls.__init__ = init
