"""Write one capture per remote-access tool beyond ScreenConnect and AnyDesk (tool-<tool>.pcap).

Run from the repository root:  .venv/bin/python pcaps/generate_tools.py   (root: tcpdump on lo)
Name files to write only those: .venv/bin/python pcaps/generate_tools.py tool-radmin.pcap ...

Every byte follows a fact in the tool's signature file (signatures/<tool>.yaml, which cites its
source) or is marked invented in pcaps/README.md. The building blocks (crafted TCP with full
handshakes, DNS, real TLS on loopback readdressed, certificates, the pcap writer) are those of
pcaps/generate.py. Crafted flows are byte-for-byte reproducible; TLS flows keep their names,
certificates' subjects, addresses, ports and timestamps, but not keys or randoms.
"""

from __future__ import annotations

import argparse
import random
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.x509.oid import NameOID
from generate import (
    BROWSER_UA,
    DOS_STUB,
    LAN_RTT,
    MILLI,
    SECOND,
    T0,
    WAN_RTT,
    Credential,
    Endpoint,
    Frame,
    TcpFlow,
    TlsRun,
    WebPki,
    dns_lookup,
    http_date,
    http_message,
    make_cert,
    name,
    readdress,
    record_tls,
    rsa_key,
    save,
    udp_frame,
    utc,
    web_client_ctx,
    web_server_ctx,
    write_pcap,
)

OUT_DIR = Path(__file__).resolve().parent

# Addresses of these captures (pcaps/README.md, "Tool captures"): one internal client per tool in
# 10.20.8.0/24, internal servers from 10.20.8.100, tool servers from 198.51.100.201 (self-hosted)
# and 203.0.113.201 (vendor clouds).
SIMPLEHELP_SUBJECT = (
    (NameOID.COUNTRY_NAME, "US"),
    (NameOID.STATE_OR_PROVINCE_NAME, "US"),
    (NameOID.LOCALITY_NAME, "US"),
    (NameOID.ORGANIZATION_NAME, "Remote Access"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Administration"),
    (NameOID.COMMON_NAME, "localhost"),
)
MESH_ROOT_CN = "MeshCentralRoot-3f6a1c"  # MeshCentralRoot-<first hex of the root's hash>


@dataclass(frozen=True, slots=True)
class ToolEnv:
    workdir: Path
    pki: WebPki  # a private CA for the vendor clouds' ordinary web certificates


# --------------------------------------------------------------------------------------------
# A capture laid out one exchange after another


@dataclass(slots=True)
class Scene:
    """Frames of one capture from one internal client, from T0 on, exchanges back to back."""

    env: ToolEnv
    client: str
    seed: int
    t_ns: int = T0
    frames: list[Frame] = field(default_factory=list)
    next_port: int = 50800
    next_txid: int = 0x6000
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def port(self) -> int:
        self.next_port += 1
        return self.next_port

    def pause(self, ns: int = 500 * MILLI) -> None:
        self.t_ns += ns

    def took(self, frames: Sequence[Frame]) -> None:
        self.frames += frames
        self.t_ns = max(self.t_ns, frames[-1].ts_ns) + 300 * MILLI

    def dns(self, qname: str, address: str) -> None:
        self.next_txid += 1
        sport = 53000 + self.next_txid % 1000
        self.took(
            dns_lookup(self.t_ns, self.client, qname, [address], sport=sport, txid=self.next_txid)
        )

    def tcp(
        self,
        server: Endpoint,
        exchanges: Sequence[tuple[bool, bytes]],
        *,
        rtt_ns: int = WAN_RTT,
        client: Endpoint | None = None,
        idle_ns: int = 0,
        server_closes: bool = False,
    ) -> None:
        """Handshake, each (from_client, data) acked by the peer, ``idle_ns`` between them, FIN."""
        flow = TcpFlow(
            client or Endpoint(self.client, self.port()),
            server,
            self.t_ns,
            rtt_ns,
            self.rng.getrandbits(32),
            self.rng.getrandbits(32),
        )
        flow.open()
        for i, (from_client, data) in enumerate(exchanges):
            if i and idle_ns:
                flow.idle(idle_ns)
            flow.send(from_client, data)
        flow.close(from_client=not server_closes)
        self.took(flow.frames)

    def udp(self, server: Endpoint, datagrams: Sequence[tuple[bool, bytes]]) -> None:
        """Datagrams each way, 30 ms apart."""
        client = Endpoint(self.client, self.port())
        frames = []
        for i, (from_client, payload) in enumerate(datagrams):
            src, dst = (client, server) if from_client else (server, client)
            frames.append(udp_frame(self.t_ns + i * 30 * MILLI, src, dst, payload, 0x7000 + i))
        self.took(frames)

    def tls(
        self,
        sni: str | None,
        server: Endpoint,
        run: TlsRun | None = None,
        *,
        rtt_ns: int = WAN_RTT,
    ) -> None:
        """A real TLS connection (an HTTPS GET unless ``run`` is given) moved onto the addresses."""
        if run is None:
            assert sni is not None
            run = https_get(self.env, sni)
        captured, lo_port = record_tls(run, self.env.workdir)
        frames = readdress(
            captured,
            lo_port,
            Endpoint(self.client, self.port()),
            server,
            start_ns=self.t_ns,
            rtt_ns=rtt_ns,
            idle_ns=SECOND,
        )
        self.took(frames)

    def dns_and_tls(self, sni: str, address: str, port: int = 443) -> None:
        self.dns(sni, address)
        self.tls(sni, Endpoint(address, port))


def https_get(env: ToolEnv, host: str, path: str = "/") -> TlsRun:
    """TLS 1.3 to a server with a certificate for ``host`` from the private CA."""
    serial = 0x7000 + random.Random(host).getrandbits(16)
    cred = env.pki.issue(env.workdir, host, serial)
    request = http_message(
        f"GET {path} HTTP/1.1", [("Host", host), ("User-Agent", BROWSER_UA), ("Accept", "*/*")]
    )
    return TlsRun(
        web_server_ctx(cred),
        web_client_ctx(env.pki),
        host,
        ((request, b"HTTP/1.1 204 No Content\r\n\r\n"),),
    )


def tls12_unverified_run(cred: Credential, sni: str | None, request: bytes) -> TlsRun:
    """TLS 1.2, so the server's certificate is on the wire in clear; the client does not verify."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(cred.chain_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    return TlsRun(server, client, sni, ((request, reply),))


def get(
    path: str, host: str, agent: str = BROWSER_UA, extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    headers = [("Host", host), ("User-Agent", agent), ("Accept", "*/*"), *extra]
    return http_message(f"GET {path} HTTP/1.1", headers)


def response(status: str, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    return http_message(f"HTTP/1.1 {status}", [*headers, ("Content-Length", str(len(body)))], body)


WEBSOCKET = (
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
)
SWITCHING = http_message(
    "HTTP/1.1 101 Switching Protocols",
    [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ],
)


# --------------------------------------------------------------------------------------------
# The tools


def build_teamviewer(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.11", seed=801)
    router = Endpoint("203.0.113.201", 5938)
    s.dns("router15.teamviewer.com", router.ip)
    # Client speaks first with 17 24, the router answers 11 30 (the real capture's first bytes).
    hello = (
        bytes.fromhex("17240a20")
        + bytes(9)
        + bytes.fromhex("4800800001000000148000")
        + s.rng.randbytes(13)
    )
    answer = bytes.fromhex(
        "113036001800000001000000000000001b000000180000008c00"
    ) + s.rng.randbytes(22)
    s.tcp(
        router,
        [
            (True, hello),
            (False, answer),
            (True, bytes.fromhex("1724281800") + s.rng.randbytes(61)),
            (False, bytes.fromhex("11303c00") + s.rng.randbytes(143)),
        ],
    )
    # HTTP fallback on port 80 with the client's own User-Agent.
    dyngate = "Mozilla/4.0 (compatible; MSIE 6.0; DynGate)"
    s.tcp(
        Endpoint(router.ip, 80),
        [
            (
                True,
                get(
                    "/din.aspx?s=00000000&id=0&client=DynGate&p=10000001",
                    "router15.teamviewer.com",
                    dyngate,
                    [("Connection", "Keep-Alive"), ("Cache-Control", "no-cache")],
                ),
            ),
            (
                False,
                response(
                    "200 OK",
                    [("Content-Type", "application/octet-stream")],
                    bytes.fromhex("17242d") + s.rng.randbytes(45),
                ),
            ),
        ],
    )
    # A long session on 5938 the sensor picked up in the middle: only keep-alives, no handshake.
    mid = TcpFlow(
        Endpoint(s.client, 50880),
        Endpoint("203.0.113.203", 5938),
        s.t_ns,
        WAN_RTT,
        0x5A5A0000,
        0x6B6B0000,
    )
    keepalive = bytes.fromhex("17241b0000")
    for _ in range(2):
        mid.send(True, keepalive)
        mid.send(False, keepalive)
        mid.idle(15 * SECOND)
    mid.close(from_client=True)
    s.took(mid.frames)
    s.dns_and_tls("client.teamviewer.com", "203.0.113.202")
    # Peer to peer over UDP: counter 0 at byte 0, magic 17 24 at bytes 11-12, both ways.
    peer = Endpoint("198.51.100.206", 40123)
    p2p = bytes(10) + bytes.fromhex("031724475000050000") + bytes(13) + b"198.51.100.206\x00"
    s.udp(
        peer,
        [
            (True, p2p + bytes(8)),
            (False, p2p + bytes(8)),
            (False, bytes(10) + bytes.fromhex("031724") + s.rng.randbytes(40)),
        ],
    )
    return s.frames


def build_splashtop(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.12", seed=802)
    s.dns_and_tls("st2-relay-07.relay.splashtop.com", "203.0.113.204")
    s.dns_and_tls("be.api.splashtop.com", "203.0.113.205")
    checkin = bytes.fromhex("000100080000000000020100")
    s.tcp(
        Endpoint("203.0.113.206", 6783),
        [(True, checkin), (False, bytes.fromhex("00010008") + s.rng.randbytes(8))],
    )
    start = bytes.fromhex("01003412") + s.rng.randbytes(48)
    reply = bytes.fromhex("02003100") + s.rng.randbytes(28)
    s.tcp(
        Endpoint("10.20.8.112", 6784),
        [(True, start), (False, reply), (True, bytes.fromhex("00003412"))],
        rtt_ns=LAN_RTT,
    )
    return s.frames


def build_atera(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.13", seed=803)
    s.dns_and_tls("agent-api.atera.com", "203.0.113.208")
    s.dns_and_tls("app.atera.com", "203.0.113.209")
    s.dns_and_tls("getalphacontrol.com", "203.0.113.210")
    return s.frames


def simplehelp_credential(workdir: Path) -> Credential:
    """Self-signed, with the subject and issuer of the certificate SimpleHelp ships with."""
    key = rsa_key()
    subject = name(*SIMPLEHELP_SUBJECT)
    cert = make_cert(
        subject, key, subject, key, serial=0x5E1F, valid=(utc(2023, 8, 1), utc(2033, 7, 29))
    )
    return save(workdir, "simplehelp-default", key, [cert])


def build_simplehelp(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.14", seed=804)
    server = "198.51.100.201"
    host = "support.remote-helpers.example"
    s.dns(host, server)
    page = b"<html><head><title>Remote Support</title></head><body>SimpleHelp</body></html>"
    s.tcp(
        Endpoint(server, 80),
        [
            (True, get("/", host)),
            (
                False,
                response(
                    "200 OK",
                    [
                        ("Server", "SimpleHelp/SSuite"),
                        ("Content-Type", "text/html"),
                        ("Date", http_date(s.t_ns)),
                    ],
                    page,
                ),
            ),
        ],
    )
    check = "/access/JWrapper-Remote%20Access-version.txt?time=1709283601234"
    s.tcp(
        Endpoint(server, 80),
        [
            (True, get(check, host, "JWrapperDownloader")),
            (
                False,
                response(
                    "200 OK",
                    [("Server", "SimpleHelp/SSuite"), ("Content-Type", "text/plain")],
                    b"5.5.1\n",
                ),
            ),
        ],
    )
    request = get("/", host)
    s.tls(
        host,
        Endpoint(server, 443),
        tls12_unverified_run(simplehelp_credential(env.workdir), host, request),
    )
    s.dns("simple-help.com", "203.0.113.211")
    return s.frames


def build_rustdesk(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.15", seed=805)
    rendezvous = "203.0.113.212"
    s.dns("rs-ny.rustdesk.com", rendezvous)
    s.tcp(
        Endpoint(rendezvous, 21115),
        [
            (True, bytes.fromhex("14a201020801")),
            (False, bytes.fromhex("1aa2010508011001") + s.rng.randbytes(2)),
        ],
    )
    peer_id = b"123456789"
    # register peer: field 6 (len 13) = {field 1: id (9 bytes), field 2: serial}
    register = bytes.fromhex("320d0a09") + peer_id + bytes.fromhex("1001")
    s.udp(Endpoint(rendezvous, 21116), [(True, register), (False, bytes.fromhex("3a020801"))])
    # register pk: field 15 (len 83) = {field 1: id, field 2: uuid, field 3: 32-byte key ...}
    pk = (
        bytes.fromhex("7a530a09")
        + peer_id
        + bytes.fromhex("1210")
        + s.rng.randbytes(16)
        + bytes.fromhex("1a20")
        + s.rng.randbytes(32)
        + bytes.fromhex("2200")
        + s.rng.randbytes(18)
    )
    s.udp(Endpoint(rendezvous, 21116), [(True, pk), (False, bytes.fromhex("820102") + bytes(2))])
    # LAN discovery: field 22 (len 6) = {field 1: "ping"}, to the broadcast address.
    ping = bytes.fromhex("b201060a04") + b"ping"
    s.udp(Endpoint("10.20.255.255", 21119), [(True, ping)])
    s.dns_and_tls("web.rustdesk.com", "203.0.113.213")
    return s.frames


def meshcentral_credential(workdir: Path, host: str) -> Credential:
    """The server's own root MeshCentralRoot-<hash> and a web certificate it issued."""
    root_key, key = rsa_key(), rsa_key()
    root_name = name((NameOID.COMMON_NAME, MESH_ROOT_CN))
    root = make_cert(
        root_name,
        root_key,
        root_name,
        root_key,
        serial=0x3F6A1C,
        valid=(utc(2024, 1, 10), utc(2054, 1, 2)),
        ca=True,
    )
    leaf = make_cert(
        name((NameOID.COMMON_NAME, host)),
        key,
        root_name,
        root_key,
        serial=0x3F6A1D,
        valid=(utc(2024, 1, 10), utc(2054, 1, 2)),
        dns_names=[host],
    )
    return save(workdir, "meshcentral", key, [leaf, root])


def build_meshcentral(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.16", seed=806)
    server = "198.51.100.202"
    host = "mesh.remote-helpers.example"
    s.dns(host, server)
    s.tls(
        host,
        Endpoint(server, 443),
        tls12_unverified_run(meshcentral_credential(env.workdir, host), host, get("/", host)),
    )
    # The same server without TLS (port 80, --notls or behind a TLS-terminating proxy).
    web = Endpoint(server, 80)
    agent = DOS_STUB + s.rng.randbytes(600)
    meshid = "mH8zYq4c9x7aRk2pW1vT0nLsB6dJfE3gUoQiZyXwVmNhCbA5"
    s.tcp(
        web,
        [
            (True, get(f"/meshagents?id=4&meshid={meshid}&installflags=0", host)),
            (
                False,
                response(
                    "200 OK",
                    [
                        ("Content-Type", "application/octet-stream"),
                        ("Content-Disposition", "attachment; filename=meshagent.exe"),
                    ],
                    agent,
                ),
            ),
        ],
    )
    for path in (
        "/agent.ashx",
        f"/meshrelay.ashx?p=2&nodeid=node//{meshid[:24]}&id=7301&rauth=x1",
        "/control.ashx",
    ):
        s.tcp(
            web,
            [
                (True, get(path, host, extra=WEBSOCKET)),
                (False, SWITCHING),
                (True, bytes.fromhex("8281") + s.rng.randbytes(5)),
            ],
        )
    s.dns("meshcentral.com", "203.0.113.214")
    return s.frames


def build_netsupport(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.17", seed=807)
    geo = "geo.netsupportsoftware.com"
    s.dns(geo, "203.0.113.215")
    s.tcp(
        Endpoint("203.0.113.215", 80),
        [
            (True, get("/location/loca.asp", geo, "NetSupport Manager/1.3")),
            (False, response("200 OK", [("Content-Type", "text/html")], b"52.3676,4.9041")),
        ],
    )
    gateway = "198.51.100.203"
    body = b"CMD=POLL\nINFO=1\nACK=1\n"
    poll = http_message(
        f"POST http://{gateway}/fakeurl.htm HTTP/1.1",
        [
            ("User-Agent", "NetSupport Manager/1.3"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body))),
            ("Host", gateway),
            ("Connection", "Keep-Alive"),
            ("Pragma", "no-cache"),
        ],
        body,
    )
    answer = response(
        "200 OK",
        [
            ("Server", "NetSupport Gateway/1.8"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Connection", "Keep-Alive"),
        ],
        b"CMD=ENCD\nES=1\nDATA=" + s.rng.randbytes(32).hex().encode(),
    )
    # Plain HTTP on port 443: the gateway tunnel is not TLS.
    s.tcp(Endpoint(gateway, 443), [(True, poll), (False, answer)], idle_ns=0)
    return s.frames


def build_quick_assist(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.18", seed=808)
    s.dns_and_tls("remoteassistance.support.services.microsoft.com", "203.0.113.216")
    s.dns_and_tls("web.support.services.microsoft.com", "203.0.113.217")
    return s.frames


def build_action1(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.19", seed=809)
    s.dns_and_tls("server.action1.com", "203.0.113.218")
    s.dns_and_tls("a1-backend-packages.s3.amazonaws.com", "203.0.113.219")
    return s.frames


def build_level(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.20", seed=810)
    s.dns_and_tls("agents.level.io", "203.0.113.220")
    s.dns_and_tls("builds.level.io", "203.0.113.221")
    return s.frames


def build_ninjaone(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.21", seed=811)
    s.dns_and_tls("app.ninjarmm.com", "203.0.113.222")
    return s.frames


def build_kaseya(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.22", seed=812)
    s.dns_and_tls("acme-msp.kaseya.net", "203.0.113.223")
    s.dns("deploy01.kaseya.com", "203.0.113.224")
    return s.frames


def build_syncro(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.23", seed=813)
    s.dns_and_tls("rmm.syncromsp.com", "203.0.113.225")
    return s.frames


def build_zoho_assist(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.24", seed=814)
    s.dns_and_tls("gateway.zohoassist.com", "203.0.113.226")
    return s.frames


def build_logmein(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.25", seed=815)
    s.dns_and_tls("control.logmein-gateway.com", "203.0.113.227")
    s.dns_and_tls("secure.logmein.com", "203.0.113.228")
    s.dns("www.fastsupport.com", "203.0.113.229")
    return s.frames


def build_beyondtrust(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.26", seed=816)
    s.dns_and_tls("acme-support.beyondtrustcloud.com", "203.0.113.230")
    return s.frames


def build_radmin(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.27", seed=817)
    s.dns("www.radmin.com", "203.0.113.231")
    setup = bytes.fromhex("01000000010000000808")
    # 46 bytes: 01 00 00 00 25, two bytes, 02 12 08 02 at 7, two bytes, 0A at 13, the rest opaque.
    answer = bytes.fromhex("0100000025000002120802") + bytes(2) + b"\x0a" + s.rng.randbytes(32)
    s.tcp(
        Endpoint("198.51.100.204", 4899),
        [
            (True, setup),
            (False, answer),
            (True, s.rng.randbytes(60)),
            (False, s.rng.randbytes(420)),
        ],
    )
    return s.frames


def build_nomachine(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.28", seed=818)
    s.dns("www.nomachine.com", "203.0.113.232")
    # The NX banners, then bytes standing in for the TLS session that follows them.
    s.tcp(
        Endpoint("198.51.100.205", 4000),
        [
            (True, b"NXSH-8.10.1\n"),
            (False, b"NXD-8.10.1\n"),
            (True, bytes.fromhex("1603010200") + s.rng.randbytes(512)),
            (False, bytes.fromhex("1603030080") + s.rng.randbytes(128)),
        ],
    )
    return s.frames


def build_chrome_remote_desktop(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.29", seed=819)
    s.dns_and_tls("remotedesktop-pa.googleapis.com", "203.0.113.233")
    s.dns_and_tls("remotedesktop.google.com", "203.0.113.234")
    s.dns("chromoting-host.talkgadget.google.com", "203.0.113.235")
    return s.frames


def x224_request(cookie: str | None, protocols: int) -> bytes:
    """TPKT + X.224 Connection Request ([MS-RDPBCGR] 2.2.1.1), optional cookie, RDP_NEG_REQ."""
    body = b"Cookie: mstshash=" + cookie.encode("ascii") + b"\r\n" if cookie else b""
    body += bytes([0x01, 0x00, 0x08, 0x00]) + protocols.to_bytes(4, "little")
    x224 = bytes([6 + len(body), 0xE0, 0, 0, 0, 0, 0]) + body
    return bytes([0x03, 0x00]) + (4 + len(x224)).to_bytes(2, "big") + x224


def x224_confirm(protocol: int) -> bytes:
    """TPKT + X.224 Connection Confirm with RDP_NEG_RSP selecting ``protocol``."""
    neg = bytes([0x02, 0x1F, 0x08, 0x00]) + protocol.to_bytes(4, "little")
    x224 = bytes([6 + len(neg), 0xD0, 0, 0, 0x12, 0x34, 0]) + neg
    return bytes([0x03, 0x00]) + (4 + len(x224)).to_bytes(2, "big") + x224


def rdpeudp_syn(rng: random.Random) -> bytes:
    """[MS-RDPEUDP] SYN: snSourceAck -1, window, SYN|CORRELATION_ID|SYNEX, ISN, MTUs 1232."""
    head = bytes.fromhex("ffffffff00401801") + rng.randbytes(4) + bytes.fromhex("04d004d0")
    correlation = bytes([0x5B]) + rng.randbytes(15).replace(b"\x0d", b"\x0e") + bytes(16)
    synex = bytes.fromhex("00010002")
    return (head + correlation + synex).ljust(1232, b"\x00")


def build_rdp(env: ToolEnv) -> list[Frame]:
    s = Scene(env, "10.20.8.30", seed=820)
    inside = Endpoint("10.20.8.100", 3389)
    outsider = "198.51.100.250"
    # 1: inbound from the internet to an internal server, with the routing cookie (crossing).
    s.tcp(
        inside,
        [
            (True, x224_request("administrator", 0x0B)),
            (False, x224_confirm(0x02)),
            (True, bytes.fromhex("16030100") + s.rng.randbytes(180)),
            (False, bytes.fromhex("16030300") + s.rng.randbytes(900)),
        ],
        client=Endpoint(outsider, 51234),
    )
    # 2: the same client over UDP 3389 (the UDP transport's SYN, then the server's SYN+ACK).
    syn = rdpeudp_syn(s.rng)
    syn_ack = (
        bytes(4) + bytes.fromhex("00400005") + s.rng.randbytes(4) + bytes.fromhex("04d004d0")
    ).ljust(1232, b"\x00")
    frames = [
        udp_frame(s.t_ns, Endpoint(outsider, 51235), inside, syn, 0x7100),
        udp_frame(s.t_ns + 24 * MILLI, inside, Endpoint(outsider, 51235), syn_ack, 0x7101),
    ]
    s.took(frames)
    # 3: outbound from the internal client to a server on the internet, no cookie (crossing).
    s.tcp(
        Endpoint("203.0.113.236", 3389),
        [
            (True, x224_request(None, 0x03)),
            (False, x224_confirm(0x01)),
            (True, bytes.fromhex("16030100") + s.rng.randbytes(200)),
        ],
    )
    # 4: internal to internal, an ordinary admin session: not reported.
    s.tcp(
        Endpoint("10.20.8.101", 3389),
        [(True, x224_request("helpdesk", 0x0B)), (False, x224_confirm(0x02))],
        rtt_ns=LAN_RTT,
    )
    return s.frames


BUILDERS: dict[str, Callable[[ToolEnv], list[Frame]]] = {
    "tool-teamviewer.pcap": build_teamviewer,
    "tool-splashtop.pcap": build_splashtop,
    "tool-atera.pcap": build_atera,
    "tool-simplehelp.pcap": build_simplehelp,
    "tool-rustdesk.pcap": build_rustdesk,
    "tool-meshcentral.pcap": build_meshcentral,
    "tool-netsupport.pcap": build_netsupport,
    "tool-quick-assist.pcap": build_quick_assist,
    "tool-action1.pcap": build_action1,
    "tool-level.pcap": build_level,
    "tool-ninjaone.pcap": build_ninjaone,
    "tool-kaseya.pcap": build_kaseya,
    "tool-syncro.pcap": build_syncro,
    "tool-zoho-assist.pcap": build_zoho_assist,
    "tool-logmein.pcap": build_logmein,
    "tool-beyondtrust.pcap": build_beyondtrust,
    "tool-radmin.pcap": build_radmin,
    "tool-nomachine.pcap": build_nomachine,
    "tool-chrome-remote-desktop.pcap": build_chrome_remote_desktop,
    "tool-rdp.pcap": build_rdp,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", metavar="FILE", help="write only these (default: all)")
    names = parser.parse_args(argv).files or list(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown file {unknown[0]!r} (known: {', '.join(BUILDERS)})")
    with tempfile.TemporaryDirectory(prefix="rmm-tool-pcaps-") as tmp:
        env = ToolEnv(Path(tmp), WebPki.create())
        for filename in names:
            count = write_pcap(OUT_DIR / filename, BUILDERS[filename](env))
            print(f"{filename}: {count} packets")


if __name__ == "__main__":
    main()
