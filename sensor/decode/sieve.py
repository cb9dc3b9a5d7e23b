"""Shard sieve: drop another shard's packet from the raw capture bytes, before it becomes a frame.

With ``analyze --workers N`` every worker reads the whole file and keeps the flows of its shard.
Turning a record into a frame (a copy of its bytes, a tuple, a trip through the engine's loop)
costs more than the engine spends on a packet of a flow it only counts, so a worker that did
this for the other shards' half of the file lost most of its gain. The sieve answers the engine's
own question on the record in place, reading a few bytes and allocating nothing (compiled).

It only ever drops a packet the engine would have dropped itself, with no other effect:
- Ethernet/IPv4 without options, not a fragment, a TCP or UDP header the engine's inline decode
  accepts (so no decode error goes uncounted), and a shard other than its own;
- not a DNS response (every shard reads every answer for attribution);
- not a packet at which the engine's clock would tick or jump back: the engine keeps
  ``next_tick`` current, so timeouts run at exactly the packets they run at with one worker.
Everything else is passed on, and the engine decides as before.
"""

from __future__ import annotations

from mypy_extensions import i64


class Sieve:
    """One worker's view of which packets are not its own; read by the capture reader."""

    def __init__(self, index: int, shards: int, backwards: int) -> None:
        # 64-bit: the shard arithmetic below compiles to plain machine operations.
        self.index: i64 = index
        self.shards: i64 = shards
        # How far time may go back without a jump in the engine's clock.
        self.backwards = backwards
        # The window of packet times at which the engine's clock stands still, kept current by
        # the engine through set_clock (once a tick, not once a record).
        self.next_tick = 0
        self.earliest = -backwards
        # The time of the last record the reader asked about (it asks about every one), dropped
        # or not: the engine's "last packet seen".
        self.last_ts = 0
        self.reading = False

    def set_clock(self, next_tick: int) -> None:
        """The engine's next expiry time moved."""
        self.next_tick = next_tick
        self.earliest = next_tick - self.backwards

    def drops(self, linktype: int, buf: bytes, off: i64, caplen: i64, ts: int) -> bool:
        """Whether the record at ``buf[off:off + caplen]`` seen at ``ts`` may be left unread."""
        self.last_ts = ts
        self.reading = True
        if not self.earliest <= ts < self.next_tick:
            return False  # the engine's clock moves at this packet
        if (
            linktype != 1
            or caplen < 54
            or buf[off + 12] != 0x08
            or buf[off + 13] != 0x00
            or buf[off + 14] != 0x45
            or buf[off + 20] & 0x3F
            or buf[off + 21]
        ):
            return False
        proto = buf[off + 23]
        end: i64 = 14 + (i64(buf[off + 16]) << 8 | i64(buf[off + 17]))
        end = min(end, caplen)
        if proto == 6:
            start: i64 = 34 + ((i64(buf[off + 46]) >> 4) << 2)
            if start < 54 or start > end:
                return False
        elif proto == 17:
            if end < 42 or (buf[off + 34] << 8 | buf[off + 35]) == 53:
                return False
        else:
            return False
        # The engine's shard of a flow key: the last two bytes of each address, XORed.
        low: i64 = buf[off + 29] ^ buf[off + 33]
        high: i64 = buf[off + 28] ^ buf[off + 32]
        return (low + high) % self.shards != self.index
