"""The metrics endpoint: /metrics (Prometheus text) and /healthz, optional TLS and basic auth.

A small threaded server in the supervisor process; packet work never happens here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sensor.config import MetricsSettings


class MetricsServer:
    def __init__(
        self,
        settings: MetricsSettings,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
    ) -> None:
        host, _, port = settings.address.rpartition(":")
        handler = _handler(registry, health, settings)
        self.httpd = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)
        self.httpd.daemon_threads = True
        if settings.tls_cert and settings.tls_key:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(
    registry: CollectorRegistry, health: Callable[[], tuple[bool, str]], settings: MetricsSettings
) -> type[BaseHTTPRequestHandler]:
    user = settings.basic_auth_user
    password_sha256 = settings.basic_auth_password_sha256.lower()

    class Handler(BaseHTTPRequestHandler):
        server_version = "rmm-sensor"

        def do_GET(self) -> None:
            if user and not self._authorized():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="rmm-sensor"')
                self.end_headers()
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/healthz":
                ok, text = health()
                self._reply(200 if ok else 503, "text/plain; charset=utf-8", text.encode() + b"\n")
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found\n")

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            try:
                given_user, _, given = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            digest = hashlib.sha256(given.encode()).hexdigest()
            return hmac.compare_digest(given_user, user) and hmac.compare_digest(
                digest, password_sha256
            )

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every 15 s would flood the log

    return Handler
