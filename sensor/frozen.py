"""Pickling for frozen dataclasses of the compiled modules.

Worker processes send flow records, sessions and settings through multiprocessing queues. A
frozen dataclass compiled by mypyc unpickles by setting its fields one by one, which ``frozen``
forbids; the reducer registered here rebuilds it through ``__init__`` instead.
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
