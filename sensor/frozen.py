"""Pickling of the frozen dataclasses of the compiled modules.

Worker processes send flow records, sessions and settings through multiprocessing queues. A
frozen dataclass compiled by mypyc unpickles by setting its fields one by one, which ``frozen``
forbids; the reducer registered here rebuilds it through ``__init__`` instead.

The classes built for every flow (the record, its summaries, the TLS, HTTP and DNS results)
write their ``__init__`` out with ``object.__setattr__`` per field. The one ``dataclasses``
generates is interpreted Python, even in a compiled module: 3.3 µs for a flow record. Written
in the module, it is compiled, and mypyc turns each of those calls into a plain store (0.1 µs).
``tests/test_frozen.py`` holds every such ``__init__`` to its class's fields.
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
