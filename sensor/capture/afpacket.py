"""Live capture from a Linux interface through an AF_PACKET TPACKET_V3 memory-mapped ring.

The kernel writes packets into blocks of a ring shared with this process and hands a block over
when it is full or ``block_timeout_ms`` has passed; :meth:`RingCapture.frames` walks the handed-over
blocks, copies each frame out (the ring slot is reused) and hands each block back as soon as its
last frame is taken. No system call is made per packet: one ``poll`` per idle wait, one header
unpack and one slice per frame.

Frames are the tuples of :mod:`sensor.capture.files`, each a copy of its packet out of the ring.
A tcpdump-style filter is compiled once by libpcap (through scapy) and attached to the socket in
the kernel, before the socket is bound, so no unfiltered packet reaches the ring.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sensor.capture.files import Frame, frame

__all__ = ["CaptureSetupError", "Frame", "RingCapture", "RingSettings", "compile_bpf"]

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>, <linux/sockios.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_ALL = 3
ETH_P_8021Q = 0x8100
SO_ATTACH_FILTER = 26
SIOCGIFFLAGS = 0x8913
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
IFNAMSIZ = 16

# <linux/if_arp.h> device types this reader knows how to label.
ARPHRD_ETHER = 1
ARPHRD_RAWIP = 519
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPES = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,  # the loopback device carries zeroed Ethernet headers
    ARPHRD_NONE: LINKTYPE_RAW,  # tun devices: the packet starts at the IP header
    ARPHRD_RAWIP: LINKTYPE_RAW,
}

# libpcap's largest snap length; a filter's "accept" returns this many bytes at most.
MAX_SNAPLEN = 262144
# Room for the block descriptor and a packet's tpacket3_hdr + sockaddr_ll ahead of its data.
BLOCK_OVERHEAD = 1024
# tp_frame_size means little for TPACKET_V3 (packets are packed back to back in a block) but the
# kernel still checks it against the block size and the frame count.
FRAME_SIZE = 2048
BPF_RET_K = 0x06  # BPF_RET | BPF_K: "accept k bytes"
BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter
TPACKET_REQ3 = struct.Struct("=7I")
PACKET_MREQ = struct.Struct("=iHH8s")
PACKET_STATS_V3 = struct.Struct("=III")  # tp_packets, tp_drops, tp_freeze_q_cnt
IFREQ_NAME = struct.Struct("=16s16x")  # struct ifreq: name, then a 16-byte union
IFREQ_SHORT = struct.Struct("=16sH")  # ifr_flags / ifr_hwaddr.sa_family
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 from byte 8.
BLOCK_STATUS_AT = 8
BLOCK_STATUS = struct.Struct("=I")  # block_status
BLOCK_PACKETS = struct.Struct("=II")  # num_pkts, offset_to_first_pkt (at byte 12)
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, (net, rxhash),
# vlan_tci, vlan_tpid.
TP3_HDR = struct.Struct("=6IH6xIH")
VLAN_TAG = struct.Struct("!HH")


class CaptureSetupError(Exception):
    """The capture could not be opened; the message is one line for an operator."""


@dataclass(frozen=True, slots=True)
class RingSettings:
    """How the ring is sized and what reaches it.

    The default ring is 32 blocks of 4 MiB = 128 MiB of kernel memory: about one second of a
    saturated 1 Gbit/s link, which rides out a garbage-collection pause or a slow periodic task
    without drops, while staying small enough to run a few fanout workers side by side. A 4 MiB
    block fills in ~33 ms at 1 Gbit/s, so blocks are handed over well before the timeout under
    load; at low rates each block carries whatever arrived within ``block_timeout_ms``.
    """

    snaplen: int = MAX_SNAPLEN
    block_size: int = 1 << 22  # bytes per block: a power-of-two multiple of the page size
    block_count: int = 32
    block_timeout_ms: int = 100  # hand a partly filled block over after this long
    promiscuous: bool = True
    bpf: str = ""  # tcpdump filter expression, compiled once at open
    fanout_group: int | None = None  # PACKET_FANOUT group id (hash mode, defragmenting)


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: what SO_ATTACH_FILTER takes."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def compile_bpf(expression: str, linktype: int, snaplen: int) -> bytes:
    """Packed ``struct sock_filter`` instructions for a tcpdump ``expression``.

    An empty expression accepts everything. Either way every "accept" returns ``snaplen`` bytes:
    the kernel truncates a packet to what the filter returns, which is how the snap length is
    applied (libpcap's compiler would otherwise return its own default of 65535).
    """
    if not expression.strip():
        return BPF_INSN.pack(BPF_RET_K, 0, 0, snaplen)
    # scapy is only the bridge to libpcap's compiler; importing it costs ~0.3 s, so only here.
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception

    try:
        program: Any = compile_filter(expression, linktype=linktype)
    except Scapy_Exception as exc:
        # scapy wraps libpcap's reason as "Failed to compile filter expression '...' (reason)".
        reason = str(exc)
        prefix = f"Failed to compile filter expression {expression!r} ("
        if reason.startswith(prefix) and reason.endswith(")"):
            reason = reason[len(prefix) : -1]
        raise CaptureSetupError(f"bad capture filter {expression!r}: {reason}") from exc
    except ImportError as exc:
        raise CaptureSetupError(
            f"cannot compile capture filter {expression!r}: libpcap is missing "
            "(install the libpcap0.8 package)"
        ) from exc
    out = bytearray()
    for i in range(int(program.bf_len)):
        insn = program.bf_insns[i]
        k = int(insn.k)
        if insn.code == BPF_RET_K and k:
            k = snaplen
        out += BPF_INSN.pack(insn.code, insn.jt, insn.jf, k)
    return bytes(out)


def _check_settings(settings: RingSettings) -> None:
    page = mmap.PAGESIZE
    size = settings.block_size
    if not 1 <= settings.snaplen <= MAX_SNAPLEN:
        raise CaptureSetupError(f"snaplen {settings.snaplen} must be within 1..{MAX_SNAPLEN}")
    if size < page or size & (size - 1):
        raise CaptureSetupError(
            f"ring block_size {size} must be a power-of-two multiple of the {page}-byte page size"
        )
    if size < settings.snaplen + BLOCK_OVERHEAD:
        raise CaptureSetupError(
            f"ring block_size {size} is too small for snaplen {settings.snaplen} "
            f"(needs at least {settings.snaplen + BLOCK_OVERHEAD})"
        )
    if not 1 <= settings.block_count <= 65536:
        raise CaptureSetupError(f"ring block_count {settings.block_count} must be 1..65536")
    if not 1 <= settings.block_timeout_ms <= 60000:
        raise CaptureSetupError(
            f"ring block_timeout_ms {settings.block_timeout_ms} must be 1..60000"
        )
    group = settings.fanout_group
    if group is not None and not 0 <= group <= 0xFFFF:
        raise CaptureSetupError(f"fanout_group {group} must be 0..65535")


def _block_ready(ring: mmap.mmap, base: int) -> bool:
    """The kernel has handed the block at ``base`` over to user space."""
    return bool(BLOCK_STATUS.unpack_from(ring, base + BLOCK_STATUS_AT)[0] & TP_STATUS_USER)


def _with_vlan(data: bytes, status: int, tci: int, tpid: int) -> bytes:
    """Put back the 802.1Q tag the kernel moved out of the frame into the packet header."""
    if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
        tpid = ETH_P_8021Q
    return data[:12] + VLAN_TAG.pack(tpid, tci) + data[12:]


class RingCapture:
    """One AF_PACKET socket with a TPACKET_V3 receive ring on one interface."""

    linktype: int

    def __init__(self, interface: str, settings: RingSettings) -> None:
        _check_settings(settings)
        self.interface = interface
        self.settings = settings
        self.linktype = LINKTYPE_ETHERNET
        self._sock: socket.socket | None = None
        self._ring: mmap.mmap | None = None
        self._poller = select.poll()
        self._ifindex = 0
        # Ring cursor: current block, offset of the next packet header, packets left in the
        # block (-1: the block has not been opened yet).
        self._block = 0
        self._offset = 0
        self._left = -1
        # Totals survive reopen(): the kernel resets its counters on every read.
        self._packets = 0
        self._drops = 0
        self._open()

    # -- setup ---------------------------------------------------------------------------------

    def _open(self) -> None:
        name = self.interface
        if not _valid_name(name):
            raise CaptureSetupError(f"{name!r} is not a valid interface name")
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise CaptureSetupError(
                f"{name}: opening a packet socket needs CAP_NET_RAW (run as root or grant "
                "cap_net_raw)"
            ) from exc
        except OSError as exc:
            raise CaptureSetupError(f"{name}: cannot open a packet socket: {exc.strerror}") from exc
        opened = False
        try:
            self._setup(sock)
            opened = True
        finally:
            if not opened:
                if self._ring is not None:
                    self._ring.close()
                    self._ring = None
                sock.close()

    def _setup(self, sock: socket.socket) -> None:
        """Filter, ring and bind, in the order that keeps unfiltered packets out of the ring.

        The socket was opened for protocol 0, so it receives nothing until bind(): the filter and
        the ring are in place before the first packet can arrive.
        """
        name = self.interface
        settings = self.settings
        ifindex = _ifindex(name)
        hatype = _ioctl_short(sock, SIOCGIFHWADDR, name)
        linktype = LINKTYPES.get(hatype)
        if linktype is None:
            raise CaptureSetupError(f"{name}: unsupported link type (ARPHRD {hatype})")
        program = compile_bpf(settings.bpf, linktype, settings.snaplen)
        _attach_filter(sock, program, name)
        size = settings.block_size * settings.block_count
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            sock.setsockopt(
                SOL_PACKET,
                PACKET_RX_RING,
                TPACKET_REQ3.pack(
                    settings.block_size,
                    settings.block_count,
                    FRAME_SIZE,
                    settings.block_size // FRAME_SIZE * settings.block_count,
                    settings.block_timeout_ms,
                    0,  # tp_sizeof_priv
                    0,  # tp_feature_req_word
                ),
            )
            self._ring = mmap.mmap(
                sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as exc:
            raise CaptureSetupError(
                f"{name}: cannot set up a {size >> 20} MiB capture ring: {exc.strerror} "
                "(lower block_count or block_size)"
            ) from exc
        try:
            sock.bind((name, ETH_P_ALL))
        except OSError as exc:
            raise CaptureSetupError(f"{name}: cannot bind: {exc.strerror}") from exc
        if _ifindex(name) != ifindex:
            raise CaptureSetupError(f"{name}: the interface was replaced while opening")
        if settings.promiscuous:
            _set_promiscuous(sock, ifindex, name)
        if settings.fanout_group is not None:
            _join_fanout(sock, settings.fanout_group, name)
        self._sock = sock
        self._ifindex = ifindex
        self.linktype = linktype
        self._block, self._offset, self._left = 0, 0, -1
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN | select.POLLERR)

    # -- capture -------------------------------------------------------------------------------

    def frames(self, timeout_ms: int) -> Iterator[Frame]:
        """Every frame the kernel has handed over, then return.

        When nothing is ready, waits up to ``timeout_ms`` once. Goes round the ring at most once
        per call so that, even under sustained load, the caller regains control for periodic
        work. A generator closed early resumes at the next frame on the following call. An
        interface going down does not raise: its error is cleared and the call returns.
        """
        ring = self._ring
        if ring is None:
            raise ValueError(f"capture on {self.interface} is closed")
        block_size = self.settings.block_size
        count = self.settings.block_count
        linktype = self.linktype
        ethernet = linktype == LINKTYPE_ETHERNET
        header = TP3_HDR.unpack_from
        block, offset, left = self._block, self._offset, self._left
        try:
            for lap in range(count):
                base = block * block_size
                if left < 0:
                    if not _block_ready(ring, base):
                        if lap:  # what was ready has been handed out: no waiting
                            return
                        self._wait(timeout_ms)
                        if not _block_ready(ring, base):
                            return
                    left, first = BLOCK_PACKETS.unpack_from(ring, base + BLOCK_STATUS_AT + 4)
                    offset = base + first
                while left > 0:
                    step, sec, nsec, snap, wire, status, mac, tci, tpid = header(ring, offset)
                    start = offset + mac
                    data = ring[start : start + snap]
                    left -= 1
                    offset += step
                    if status & TP_STATUS_VLAN_VALID and ethernet:
                        data = _with_vlan(data, status, tci, tpid)
                        wire += 4
                    yield frame(sec * 1_000_000_000 + nsec, linktype, data, wire)
                BLOCK_STATUS.pack_into(ring, base + BLOCK_STATUS_AT, TP_STATUS_KERNEL)
                block = block + 1 if block + 1 < count else 0
                left = -1
        finally:
            # A generator of a ring since closed or reopened must not move the new cursor.
            if self._ring is ring:
                self._block, self._offset, self._left = block, offset, left

    def _wait(self, timeout_ms: int) -> None:
        sock = self._sock
        if sock is None:
            return
        for _fd, events in self._poller.poll(timeout_ms):
            if events & select.POLLERR:
                # ENETDOWN and the like: reading SO_ERROR clears it, or every poll would return
                # at once. The socket rejoins the interface by itself when it comes back up.
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    # -- state ---------------------------------------------------------------------------------

    def stats(self) -> tuple[int, int]:
        """Cumulative ``(packets, drops)``; packets that passed the filter, dropped ones included.

        The kernel resets its counters on each read, so they are added up here (across
        :meth:`reopen` too).
        """
        self._read_stats()
        return self._packets, self._drops

    def _read_stats(self) -> None:
        if self._sock is None:
            return
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, PACKET_STATS_V3.size)
        packets, drops, _freezes = PACKET_STATS_V3.unpack(raw)
        self._packets += packets
        self._drops += drops

    def needs_reopen(self) -> bool:
        """True when the interface is gone or was re-created (a new index): only reopen() helps."""
        if self._sock is None:
            return True
        try:
            return _ifindex(self.interface) != self._ifindex
        except CaptureSetupError:
            return True

    def healthy(self) -> bool:
        """True while the socket is bound to the interface of that name and it is up.

        Down and back up, the same socket captures again by itself; only :meth:`needs_reopen`
        calls for :meth:`reopen`.
        """
        sock = self._sock
        if sock is None or self.needs_reopen():
            return False
        try:
            flags = _ioctl_short(sock, SIOCGIFFLAGS, self.interface)
        except CaptureSetupError:
            return False
        return bool(flags & IFF_UP)

    def reopen(self) -> None:
        """Close and open again on the same interface name (its index may have changed).

        If that fails (the interface is still missing, say) CaptureSetupError is raised and the
        capture stays closed; calling reopen() again later is the way back.
        """
        self.close()
        self._open()

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError(f"capture on {self.interface} is closed")
        return self._sock.fileno()

    def close(self) -> None:
        """Release the ring and the socket; idempotent. Counters are read one last time."""
        sock, ring = self._sock, self._ring
        if sock is not None:
            # On a dying socket the totals so far stay; there is nothing else to do.
            with contextlib.suppress(OSError):
                self._read_stats()
        self._sock = None
        self._ring = None
        if ring is not None:
            ring.close()
        if sock is not None:
            sock.close()

    def __enter__(self) -> RingCapture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _valid_name(name: str) -> bool:
    """What the kernel accepts as a device name (dev_valid_name), so later calls cannot choke."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        return False
    if not 0 < size < IFNAMSIZ or name in {".", ".."}:
        return False
    return not any(c in "/:\0" or c.isspace() for c in name)


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError as exc:
        raise CaptureSetupError(f"interface {name} does not exist") from exc


def _ioctl_short(sock: socket.socket, request: int, name: str) -> int:
    """The 16-bit field at the start of ifreq's union: flags, or the hardware address family."""
    request_bytes = IFREQ_NAME.pack(name.encode("utf-8"))  # checked by _valid_name
    try:
        reply = fcntl.ioctl(sock.fileno(), request, request_bytes)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise CaptureSetupError(f"interface {name} does not exist") from exc
        raise CaptureSetupError(f"{name}: interface query failed: {exc.strerror}") from exc
    return int(IFREQ_SHORT.unpack_from(reply)[1])


def _attach_filter(sock: socket.socket, program: bytes, name: str) -> None:
    instructions = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // BPF_INSN.size, ctypes.addressof(instructions))
    try:
        # The kernel copies the instructions during the call; the buffer only has to live
        # until it returns.
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    except OSError as exc:
        raise CaptureSetupError(f"{name}: the kernel rejected the filter: {exc.strerror}") from exc


def _set_promiscuous(sock: socket.socket, ifindex: int, name: str) -> None:
    mreq = PACKET_MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b"")
    try:
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    except PermissionError as exc:
        raise CaptureSetupError(
            f"{name}: promiscuous mode needs CAP_NET_ADMIN (grant it, or set promiscuous: false)"
        ) from exc
    except OSError as exc:
        raise CaptureSetupError(f"{name}: cannot enable promiscuous mode: {exc.strerror}") from exc


def _join_fanout(sock: socket.socket, group: int, name: str) -> None:
    mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
    try:
        # The defrag flag sets the top bit: too large for setsockopt's C int, so pass the bytes.
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", group | mode << 16))
    except OSError as exc:
        raise CaptureSetupError(
            f"{name}: cannot join fanout group {group}: {exc.strerror} (every member must "
            "capture on the same interface with the same settings)"
        ) from exc
