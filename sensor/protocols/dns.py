"""DNS message parser (RFC 1035), for UDP payloads and TCP streams.

Sans-IO: bytes in, a frozen ``DnsMessage`` out, ``ParseError`` for anything malformed.
Only the header, the question section and the answer section are decoded; the authority and
additional sections are not read (the sensor needs names and the addresses they resolve to).

Decisions for hostile input:

* Compression pointers must point strictly before the start of the label run they interrupt
  (so every jump moves backwards and a loop cannot form); jumps and the name's wire length
  (255 bytes) are capped too. Each offset is decoded once per message (see ``_Names``), so
  pointer chains and many names aimed into one long name cost linear time, not quadratic.
* The question and answer counts must be plausible for the message size (each question needs
  at least 5 bytes and each record at least 11), otherwise ``ParseError``. A message claiming
  65535 answers is rejected up front, without walking it.
* At most ``MAX_QUESTIONS`` questions and ``MAX_ANSWERS`` answers are decoded. Extra questions
  are skipped in place (to reach the answers); extra answers are not read.
* A truncated message is a ``ParseError``: a UDP datagram never continues.
* Names keep the case that was sent and have no trailing dot ("" is the root). Each label is
  decoded as UTF-8 with backslashreplace; a "." or "\\" inside a label is written as "\\." or
  "\\\\" so the text form stays unambiguous.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_ntop
from types import MappingProxyType
from typing import Final

from sensor.frozen import picklable
from sensor.protocols.errors import ParseError

__all__ = [
    "MAX_ANSWERS",
    "MAX_QUESTIONS",
    "RRTYPE_NAMES",
    "DnsAnswer",
    "DnsMessage",
    "DnsQuestion",
    "parse_dns",
    "parse_dns_tcp",
    "rrtype_name",
]

MAX_QUESTIONS: Final = 64
MAX_ANSWERS: Final = 64

_HEADER: Final = struct.Struct("!HHHHHH")
_RR_FIXED: Final = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_TCP_LENGTH: Final = struct.Struct("!H")
_MAX_NAME_WIRE: Final = 255
# A name has at most 127 labels; one jump per label (plus one) is all a real encoder emits.
_MAX_JUMPS: Final = 128
_MIN_QUESTION: Final = 5  # root name + type + class
_MIN_RECORD: Final = 11  # root name + type + class + ttl + rdlength
_TEN_ZERO_BYTES: Final = bytes(10)

_TYPE_A: Final = 1
_TYPE_NS: Final = 2
_TYPE_CNAME: Final = 5
_TYPE_PTR: Final = 12
_TYPE_AAAA: Final = 28
_NAME_TYPES: Final = frozenset({_TYPE_NS, _TYPE_CNAME, _TYPE_PTR})

RRTYPE_NAMES: Final = MappingProxyType(
    {
        1: "A",
        2: "NS",
        5: "CNAME",
        6: "SOA",
        10: "NULL",
        12: "PTR",
        13: "HINFO",
        15: "MX",
        16: "TXT",
        17: "RP",
        18: "AFSDB",
        24: "SIG",
        25: "KEY",
        28: "AAAA",
        29: "LOC",
        33: "SRV",
        35: "NAPTR",
        36: "KX",
        37: "CERT",
        39: "DNAME",
        41: "OPT",
        42: "APL",
        43: "DS",
        44: "SSHFP",
        45: "IPSECKEY",
        46: "RRSIG",
        47: "NSEC",
        48: "DNSKEY",
        49: "DHCID",
        50: "NSEC3",
        51: "NSEC3PARAM",
        52: "TLSA",
        53: "SMIMEA",
        55: "HIP",
        59: "CDS",
        60: "CDNSKEY",
        61: "OPENPGPKEY",
        62: "CSYNC",
        63: "ZONEMD",
        64: "SVCB",
        65: "HTTPS",
        108: "EUI48",
        109: "EUI64",
        249: "TKEY",
        250: "TSIG",
        251: "IXFR",
        252: "AXFR",
        255: "ANY",
        256: "URI",
        257: "CAA",
    }
)


@dataclass(frozen=True, slots=True, init=False)
class DnsQuestion:
    name: str
    rrtype: int

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(self, name: str, rrtype: int) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "rrtype", rrtype)


@dataclass(frozen=True, slots=True, init=False)
class DnsAnswer:
    name: str
    rrtype: int
    ttl: int
    data: str | None  # address text for A/AAAA, target name for CNAME/NS/PTR, else None

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(self, name: str, rrtype: int, ttl: int, data: str | None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "rrtype", rrtype)
        object.__setattr__(self, "ttl", ttl)
        object.__setattr__(self, "data", data)


@dataclass(frozen=True, slots=True, init=False)
class DnsMessage:
    id: int
    is_response: bool
    opcode: int
    rcode: int
    questions: tuple[DnsQuestion, ...]
    answers: tuple[DnsAnswer, ...]

    # Written out to be compiled (see sensor.frozen); the fields above are the schema.
    def __init__(
        self,
        id: int,
        is_response: bool,
        opcode: int,
        rcode: int,
        questions: tuple[DnsQuestion, ...],
        answers: tuple[DnsAnswer, ...],
    ) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "is_response", is_response)
        object.__setattr__(self, "opcode", opcode)
        object.__setattr__(self, "rcode", rcode)
        object.__setattr__(self, "questions", questions)
        object.__setattr__(self, "answers", answers)


def rrtype_name(t: int) -> str:
    """Mnemonic of an RR type, or the RFC 3597 form ``TYPE<n>`` for unknown ones."""
    return RRTYPE_NAMES.get(t, f"TYPE{t}")


def parse_dns(data: bytes) -> DnsMessage:
    """Parse one complete DNS message (a UDP payload, or one TCP message without its prefix)."""
    if len(data) < _HEADER.size:
        raise ParseError("DNS message shorter than its 12-byte header")
    msg_id, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(data)
    if _HEADER.size + qdcount * _MIN_QUESTION + ancount * _MIN_RECORD > len(data):
        raise ParseError("DNS section counts do not fit in the message")
    names = _Names(data)
    questions, pos = _read_questions(names, qdcount)
    return DnsMessage(
        id=msg_id,
        is_response=bool(flags & 0x8000),
        opcode=(flags >> 11) & 0xF,
        rcode=flags & 0xF,
        questions=questions,
        answers=_read_answers(names, pos, min(ancount, MAX_ANSWERS)) if ancount else (),
    )


def parse_dns_tcp(data: bytes) -> tuple[DnsMessage, ...] | None:
    """Parse the complete length-prefixed messages at the start of a DNS-over-TCP stream.

    Returns ``None`` while not even one message is complete. Bytes after the last complete
    message are left for the caller (they are the start of the next one).
    """
    messages: list[DnsMessage] = []
    pos = 0
    # Each pass consumes at least 2 + 12 bytes, so the loop ends with the data.
    while pos + _TCP_LENGTH.size <= len(data):
        (length,) = _TCP_LENGTH.unpack_from(data, pos)
        if length < _HEADER.size:
            raise ParseError("DNS-over-TCP length prefix shorter than a DNS header")
        end = pos + _TCP_LENGTH.size + length
        if end > len(data):
            break
        messages.append(parse_dns(data[pos + _TCP_LENGTH.size : end]))
        pos = end
    return tuple(messages) if messages else None


def _read_questions(names: _Names, count: int) -> tuple[tuple[DnsQuestion, ...], int]:
    """The questions (the first ``MAX_QUESTIONS``) and the offset after the question section."""
    data = names.data
    size = len(data)
    questions: list[DnsQuestion] = []
    pos = _HEADER.size
    for _ in range(min(count, MAX_QUESTIONS)):
        name, pos = names.read(pos)
        if pos + 4 > size:
            raise ParseError("DNS question truncated")
        questions.append(DnsQuestion(name=name, rrtype=(data[pos] << 8) | data[pos + 1]))
        pos += 4
    for _ in range(count - MAX_QUESTIONS):
        pos = _skip_question(data, pos)
    return tuple(questions), pos


def _skip_question(data: bytes, pos: int) -> int:
    pos = _skip_name(data, pos) + 4
    if pos > len(data):
        raise ParseError("DNS question truncated")
    return pos


def _read_answers(names: _Names, pos: int, count: int) -> tuple[DnsAnswer, ...]:
    """The first ``count`` records from ``pos`` on."""
    data = names.data
    size = len(data)
    read_name = names.read
    unpack_fixed = _RR_FIXED.unpack_from
    answers: list[DnsAnswer] = []
    for _ in range(count):
        name, pos = read_name(pos)
        if pos + _RR_FIXED.size > size:
            raise ParseError("DNS resource record truncated")
        rrtype, _rrclass, ttl, rdlength = unpack_fixed(data, pos)
        start = pos + _RR_FIXED.size
        pos = start + rdlength
        if pos > size:
            raise ParseError("DNS record data runs past the end of the message")
        if rrtype == _TYPE_A and rdlength == 4:  # the usual record: no call for its data
            text: str | None = inet_ntop(AF_INET, data[start:pos])
        else:
            text = _rdata_text(names, rrtype, start, pos)
        answers.append(DnsAnswer(name=name, rrtype=rrtype, ttl=ttl, data=text))
    return tuple(answers)


def _rdata_text(names: _Names, rrtype: int, start: int, end: int) -> str | None:
    if rrtype == _TYPE_A:
        if end - start != 4:
            raise ParseError("A record data is not 4 bytes")
        return inet_ntop(AF_INET, names.data[start:end])
    if rrtype == _TYPE_AAAA:
        if end - start != 16:
            raise ParseError("AAAA record data is not 16 bytes")
        return _ipv6_text(names.data[start:end])
    if rrtype in _NAME_TYPES:
        # The target name may point back anywhere in the message, but its own bytes must
        # fill the record data exactly.
        name, name_end = names.read(start)
        if name_end != end:
            raise ParseError("name in record data does not match its length")
        return name
    return None


def _ipv6_text(packed: bytes) -> str:
    """RFC 5952 text, as ``ipaddress.IPv6Address(packed).compressed`` gives it."""
    if packed.startswith(_TEN_ZERO_BYTES):
        # ::ffff:a.b.c.d and ::a.b.c.d: C libraries may print the IPv4 part dotted, and
        # ipaddress does not (or not in every Python version); follow ipaddress.
        return ipaddress.IPv6Address(packed).compressed
    return inet_ntop(AF_INET6, packed)


class _Names:
    """Decodes the names of one message, remembering the name that starts at each offset.

    Compression lets many names share a suffix. Walking each label or pointer only once keeps
    the work linear in the message size, even for names crafted to be expensive (pointer
    chains, or many names pointing into one long name).
    """

    __slots__ = ("_known", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        # Offset -> the name from there on: (text, wire length of its labels plus the root
        # byte, pointers followed inside it, offset after its bytes in place, i.e. after its
        # first pointer or its root label).
        self._known: dict[int, tuple[str, int, int, int]] = {}

    def read(self, start: int) -> tuple[str, int]:
        """Decode the (possibly compressed) name at ``start``; return it and the offset after it."""
        known = self._known
        tail = known.get(start)
        if tail is not None:
            return tail[0], tail[3]
        # The usual names: labels in place, then the root or one pointer to a name read
        # before. Same checks and results as ``_walk``, which does everything else.
        data = self.data
        size = len(data)
        if start + 1 < size and data[start] >= 0xC0:  # the most usual: just that pointer
            target = ((data[start] & 0x3F) << 8) | data[start + 1]
            tail = known.get(target) if target < start else None
            if tail is None or tail[2] >= _MAX_JUMPS:
                return self._walk(start)
            known[start] = (tail[0], tail[1], tail[2] + 1, start + 2)
            return tail[0], start + 2
        labels: list[int] = []  # offsets of the labels in place
        end = pos = start
        pointer = False
        while pos < size and 0 < data[pos] < 0x40 and pos - start < _MAX_NAME_WIRE:
            labels.append(pos)
            pos += 1 + data[pos]
            tail = known.get(pos)
            if tail is not None:  # the rest was read before
                end = tail[3]
                break
        else:
            if pos + 1 < size and data[pos] >= 0xC0:
                target = ((data[pos] & 0x3F) << 8) | data[pos + 1]
                tail = known.get(target) if target < start else None
                if tail is not None:
                    end = pos + 2
                    tail = (tail[0], tail[1], tail[2] + 1, end)
                    pointer = True
            elif pos < size and data[pos] == 0:
                end = pos + 1
                tail = ("", 1, 0, end)
        if tail is None or tail[2] > _MAX_JUMPS or pos - start + tail[1] > _MAX_NAME_WIRE:
            return self._walk(start)
        if pointer:
            known[pos] = tail
        if not labels:  # the root
            return tail[0], end
        return self._remember(labels, pos, tail), end

    def _remember(self, labels: list[int], stop: int, tail: tuple[str, int, int, int]) -> str:
        """Record the names from each label in place (they run up to ``stop``, where
        ``tail`` starts); return the name from the first one."""
        data = self.data
        known = self._known
        text, wire_length, jumps, end = tail
        start = labels[0]
        run = data[start:stop]
        if run.isascii() and b"." not in run and b"\\" not in run:
            # Nothing to escape or decode: one join, and each suffix is a slice of it
            # (every label takes as many characters as its wire bytes, its dot included).
            first = b".".join([data[at + 1 : at + 1 + data[at]] for at in labels]).decode()
            name = f"{first}.{text}" if text else first
            for at in labels:
                known[at] = (name[at - start :], wire_length + stop - at, jumps, end)
            return name
        for at in reversed(labels):
            label_text = _label_text(data[at + 1 : at + 1 + data[at]])
            text = f"{label_text}.{text}" if text else label_text
            known[at] = (text, wire_length + stop - at, jumps, end)
        return text

    def _walk(self, start: int) -> tuple[str, int]:
        """``read`` for any name: several pointers, and every malformed case."""
        known = self._known
        data = self.data
        size = len(data)
        tail: tuple[str, int, int, int] | None
        # Every label and pointer passed: offset, label text ("" for a pointer), wire size, run.
        walked: list[tuple[int, str, int, int]] = []
        run_ends: list[int] = []  # in-place end of each run of labels (run n follows jump n)
        labels_length = 0
        jumps = 0
        pos = floor = start  # a pointer must land strictly before ``floor``
        while True:  # bounded: each pass adds a label (<= 255 bytes) or a jump (<= _MAX_JUMPS)
            if pos >= size:
                raise ParseError("DNS name runs past the end of the message")
            length = data[pos]
            if length >= 0xC0:
                if pos + 1 >= size:
                    raise ParseError("DNS compression pointer truncated")
                target = ((length & 0x3F) << 8) | data[pos + 1]
                if target >= floor:
                    raise ParseError("DNS compression pointer does not point backwards")
                walked.append((pos, "", 0, jumps))
                jumps += 1
                if jumps > _MAX_JUMPS:
                    raise ParseError("too many DNS compression pointers in one name")
                run_ends.append(pos + 2)
                pos = floor = target
            elif length >= 0x40:
                raise ParseError("unsupported DNS label type")
            elif length == 0:
                run_ends.append(pos + 1)
                tail = ("", 1, 0, pos + 1)
                break
            else:
                labels_length += 1 + length
                if labels_length + 1 > _MAX_NAME_WIRE:
                    raise ParseError("DNS name longer than 255 bytes")
                label_end = pos + 1 + length
                if label_end > size:
                    raise ParseError("DNS label runs past the end of the message")
                label = data[pos + 1 : label_end]
                if b"." in label or b"\\" in label:
                    text = _label_text(label)
                else:  # nothing to escape
                    text = label.decode("utf-8", "backslashreplace")
                walked.append((pos, text, 1 + length, jumps))
                pos = label_end
            tail = known.get(pos)
            if tail is not None:
                run_ends.append(tail[3])
                break
        text, wire_length, tail_jumps, _ = tail
        if labels_length + wire_length > _MAX_NAME_WIRE:
            raise ParseError("DNS name longer than 255 bytes")
        total_jumps = jumps + tail_jumps
        if total_jumps > _MAX_JUMPS:
            raise ParseError("too many DNS compression pointers in one name")
        # Remember the name from every label and pointer passed, so reaching any of them
        # again costs nothing.
        for offset, label_text, label_size, run in reversed(walked):
            if label_text:
                text = f"{label_text}.{text}" if text else label_text
            wire_length += label_size
            known[offset] = (text, wire_length, total_jumps - run, run_ends[run])
        return text, run_ends[0]


def _skip_name(data: bytes, pos: int) -> int:
    """Offset after the name at ``pos``, without following pointers (only checks its bytes)."""
    wire_length = 1
    while True:  # bounded: each pass consumes at least one byte of ``data``
        if pos >= len(data):
            raise ParseError("DNS name runs past the end of the message")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 2 > len(data):
                raise ParseError("DNS compression pointer truncated")
            return pos + 2
        if length & 0xC0:
            raise ParseError("unsupported DNS label type")
        if length == 0:
            return pos + 1
        wire_length += 1 + length
        if wire_length > _MAX_NAME_WIRE:
            raise ParseError("DNS name longer than 255 bytes")
        pos += 1 + length


def _label_text(label: bytes) -> str:
    # Escape at the byte level first: "\\" and "." are ASCII, so this cannot split a UTF-8
    # sequence, and a literal backslash stays distinct from a backslashreplace escape.
    escaped = label.replace(b"\\", b"\\\\").replace(b".", b"\\.")
    return escaped.decode("utf-8", "backslashreplace")


picklable(DnsQuestion, DnsAnswer, DnsMessage)
