"""Protocol stage: run the sans-IO parsers over a flow's first bytes.

Called only while a direction is still being inspected; once a direction has told us what it is
(a finished TLS handshake, an HTTP head, a full buffer), inspection stops and the packets of that
direction are only counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sensor.flows.table import Direction, Flow, FlowSettings, key_ports
from sensor.protocols import dns, http, tls
from sensor.protocols.errors import ParseError

DNS_PORTS: Final = frozenset((53, 5353, 5355))
MAX_DNS_MESSAGES: Final = 32
MAX_UDP_INSPECTED: Final = 4  # datagrams per direction kept for non-DNS UDP
MAX_REQUESTS: Final = 32  # HTTP request heads kept per connection

DnsHook = Callable[[int, bytes, dns.DnsMessage], None]  # packet time, client address, message


class Inspector:
    """Decides each flow's application protocol and keeps what its parsers found."""

    def __init__(
        self,
        settings: FlowSettings,
        on_dns: DnsHook | None = None,
        identify_now: Callable[[Flow], None] | None = None,
        identify_later: Callable[[Flow, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_dns = on_dns
        self.identify_now = identify_now
        self.identify_later = identify_later
        self.parse_errors: dict[str, int] = {}

    # --- TCP ---------------------------------------------------------------------------------

    def tcp_data(self, flow: Flow, d: Direction) -> None:
        """New in-order bytes arrived in ``d`` (its buffer grew)."""
        buf = d.buf
        if buf is None:
            return
        side = 0 if d.is_client else 1
        if not flow.first_speaker:
            flow.first_speaker = "client" if d.is_client else "server"
            if self.identify_later is not None:
                self.identify_later(flow, d.last)
        if not flow.first_sizes[side]:
            flow.first_sizes[side] = len(buf)
        head_limit = self.settings.head_bytes
        if not d.consumed and len(flow.heads[side]) < head_limit:
            flow.heads[side] = bytes(buf[:head_limit])
        if not flow.app:
            flow.app = self._classify_tcp(flow, d, buf)
        app = flow.app
        full = len(buf) >= self.settings.stream_bytes
        if app == "tls":
            self._tls(flow, d, side, bytes(buf), full)
        elif app == "http":
            if d.is_client:
                self._http_requests(flow, d, buf)
            else:
                self._http_response(flow, d, bytes(buf), full)
        elif app == "dns":
            self._dns_tcp(flow, d, bytes(buf), full)
        elif len(buf) >= head_limit:
            self.stop(d)

    def _classify_tcp(self, flow: Flow, d: Direction, buf: bytearray) -> str:
        head = bytes(buf[:8])
        if tls.looks_like_tls(head):
            return "tls"
        if d.is_client and http.looks_like_http_request(head):
            return "http"
        if not d.is_client and http.looks_like_http_response(head):
            return "http"
        _, dport = key_ports(flow.key)
        if dport in DNS_PORTS:
            return "dns"
        return "unknown"

    def _tls(self, flow: Flow, d: Direction, side: int, data: bytes, full: bool) -> None:
        try:
            earlier = flow.tls[side]
            stream = tls.parse_tls_stream(
                data, earlier if isinstance(earlier, tls.TlsStream) else None
            )
        except ParseError:
            self._parse_error("tls")
            self.stop(d)
            return
        if stream is not None:
            flow.tls[side] = stream
            if stream.done:
                self.stop(d)
                return
        if full:
            self.stop(d)

    def _http_requests(self, flow: Flow, d: Direction, buf: bytearray) -> None:
        """Take every complete request head off the buffer and pass over its body.

        The buffer never holds a body, so a client can be followed through a long keep-alive
        connection (an exploit's third request, after two large POSTs) for a bounded cost.
        """
        max_head = self.settings.stream_bytes
        while True:
            if d.skip:
                taken = min(d.skip, len(buf))
                self._consume(d, buf, taken)
                d.skip -= taken
                if d.skip:
                    return
            while buf[:2] == b"\r\n":  # a stray line end between requests
                self._consume(d, buf, 2)
            if not buf:
                return
            try:
                request = http.parse_http_request(bytes(buf[:max_head]), max_head=max_head)
            except ParseError:
                if not flow.http_requests:
                    self._parse_error("http")
                self.stop(d)
                return
            if request is None:
                if len(buf) >= max_head:
                    self.stop(d)
                return
            flow.http_requests.append(request)
            if request.transfer_encoding is not None or len(flow.http_requests) >= MAX_REQUESTS:
                self.stop(d)  # a chunked body cannot be passed over by length
                return
            total = request.head_length + (request.content_length or 0)
            taken = min(total, len(buf))
            self._consume(d, buf, taken)
            d.skip = total - taken

    def _consume(self, d: Direction, buf: bytearray, n: int) -> None:
        del buf[:n]
        d.consumed += n

    def _http_response(self, flow: Flow, d: Direction, data: bytes, full: bool) -> None:
        try:
            response = http.parse_http_response(data, max_head=self.settings.stream_bytes)
        except ParseError:
            self._parse_error("http")
            self.stop(d)
            return
        if response is not None:
            flow.http_response = response
            self.stop(d)
        elif full:
            self.stop(d)

    def _dns_tcp(self, flow: Flow, d: Direction, data: bytes, full: bool) -> None:
        try:
            messages = dns.parse_dns_tcp(data)
        except ParseError:
            self._parse_error("dns")
            self.stop(d)
            return
        if messages is not None:
            for msg in messages:
                self._keep_dns(d.last, flow, msg)
            self.stop(d)
        elif full:
            self.stop(d)

    # --- UDP ---------------------------------------------------------------------------------

    def udp_data(self, flow: Flow, d: Direction, payload: bytes, ts: int) -> None:
        side = 0 if d.is_client else 1
        if not flow.first_speaker and payload:
            flow.first_speaker = "client" if d.is_client else "server"
            if self.identify_later is not None:
                self.identify_later(flow, ts)
        if not flow.heads[side] and payload:
            flow.heads[side] = payload[: self.settings.head_bytes]
            flow.first_sizes[side] = len(payload)
        if not flow.app:
            sport, dport = key_ports(flow.key)
            flow.app = "dns" if dport in DNS_PORTS or sport in DNS_PORTS else "unknown"
        if flow.app == "dns":
            try:
                msg = dns.parse_dns(payload)
            except ParseError:
                self._parse_error("dns")
            else:
                self._keep_dns(ts, flow, msg)
            if len(flow.dns) >= MAX_DNS_MESSAGES:
                self.stop(flow.c2s)
                self.stop(flow.s2c)
        elif d.pkts >= MAX_UDP_INSPECTED:
            self.stop(d)

    def _keep_dns(self, ts: int, flow: Flow, msg: dns.DnsMessage) -> None:
        if len(flow.dns) < MAX_DNS_MESSAGES:
            flow.dns.append(msg)
        if msg.is_response and self.on_dns is not None:
            self.on_dns(ts, flow.key[: (len(flow.key) - 4) >> 1], msg)

    def peek_dns(self, key: bytes, payload: bytes, ts: int) -> None:
        """A DNS datagram of a flow another shard owns: feed the hook, keep nothing."""
        if self.on_dns is None:
            return
        try:
            msg = dns.parse_dns(payload)
        except ParseError:
            return
        if msg.is_response:
            half = (len(key) - 4) >> 1
            self.on_dns(ts, key[half : 2 * half], msg)  # a response travels to the client

    # --- common ------------------------------------------------------------------------------

    def stop(self, d: Direction) -> None:
        """Stop inspecting a direction and free its buffer."""
        d.inspect = False
        d.buf = None
        d.pending = None
        flow = d.flow
        if self.identify_now is not None and not flow.c2s.inspect and not flow.s2c.inspect:
            self.identify_now(flow)

    def _parse_error(self, proto: str) -> None:
        self.parse_errors[proto] = self.parse_errors.get(proto, 0) + 1
