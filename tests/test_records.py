"""Address text of flow records."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from sensor.records import ip_text


@given(st.binary(min_size=4, max_size=4))
def test_ipv4_text_is_what_inet_ntop_gives(raw: bytes) -> None:
    assert ip_text(raw) == socket.inet_ntop(socket.AF_INET, raw)


@given(st.binary(min_size=16, max_size=16))
def test_ipv6_text_is_what_inet_ntop_gives(raw: bytes) -> None:
    assert ip_text(raw) == socket.inet_ntop(socket.AF_INET6, raw)


def test_edges() -> None:
    assert ip_text(b"\x00\x00\x00\x00") == "0.0.0.0"
    assert ip_text(b"\xff\xff\xff\xff") == "255.255.255.255"
    assert ip_text(b"\x0a\x00\x00\x01") == "10.0.0.1"
