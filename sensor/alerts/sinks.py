"""Alert outputs of the live sensor: JSON-lines file, standard output, syslog; and a file of
final session records.

Each output keeps a bounded spool: an alert that cannot be written (disk full, file not writable,
syslog unreachable) stays queued and is retried on the next alert and on every tick; failures and
the spool size show in metrics. Only when the spool is full is the oldest alert dropped, and that
is counted too: nothing is lost silently.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import socket
import sys
from typing import TYPE_CHECKING, TextIO

from sensor.addresses import syslog_target
from sensor.model import Alert, FlowRecord, Session
from sensor.output import eve

if TYPE_CHECKING:
    from sensor.metrics import Metrics

SYSLOG_FACILITY_LOCAL0 = 16
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
CONNECT_TIMEOUT_S = 2.0


class SpoolingSink:
    """Alerts only; subclasses say how one line is delivered (raising OSError on failure)."""

    name = "base"

    def __init__(self, max_spool: int, metrics: Metrics | None = None) -> None:
        self.max_spool = max_spool
        self.metrics = metrics
        self.spool: collections.deque[tuple[str, str]] = collections.deque()  # (severity, line)
        self.failures = 0
        self.dropped = 0
        self.last_error = ""

    def flow(self, record: FlowRecord) -> None:
        pass

    def session(self, session: Session) -> None:
        pass

    def alert(self, alert: Alert) -> None:
        self.enqueue(alert.severity, eve.dumps(eve.alert_event(alert)))

    def enqueue(self, severity: str, line: str) -> None:
        if len(self.spool) >= self.max_spool:
            self.spool.popleft()
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.output_dropped.labels(self.name).inc()
        self.spool.append((severity, line))
        self.retry()

    def retry(self) -> None:
        """Deliver what is spooled, oldest first, until the output fails again."""
        while self.spool:
            severity, line = self.spool[0]
            try:
                self.deliver(severity, line)
            except OSError as exc:
                self.failures += 1
                self.last_error = os.strerror(exc.errno) if exc.errno else str(exc)
                if self.metrics is not None:
                    self.metrics.output_failures.labels(self.name).inc()
                break
            self.spool.popleft()
        if self.metrics is not None:
            self.metrics.output_spooled.labels(self.name).set(len(self.spool))

    def deliver(self, severity: str, line: str) -> None:
        raise NotImplementedError

    def reopen(self) -> None:
        """Log rotation (SIGHUP)."""

    def close(self) -> None:
        self.retry()


class JsonFileSink(SpoolingSink):
    """One JSON object per line, appended with one write() so a line is never interleaved."""

    name = "file"

    def __init__(self, path: str, max_spool: int, metrics: Metrics | None = None) -> None:
        super().__init__(max_spool, metrics)
        self.path = path
        self._fd = -1

    def deliver(self, severity: str, line: str) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        data = (line + "\n").encode()
        size = os.fstat(self._fd).st_size
        written = os.write(self._fd, data)
        if written != len(data):
            # The disk filled up mid-line. Ending the line would need space there is not, and
            # the next line would be glued to the part: take the part back (freeing needs no
            # space). The alert stays spooled and is written whole once there is room.
            os.ftruncate(self._fd, size)
            raise OSError(errno.ENOSPC, "short write")

    def reopen(self) -> None:
        self._close_fd()
        self.retry()

    def close(self) -> None:
        super().close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # closing a file on a failed disk: nothing to do
                os.close(self._fd)
            self._fd = -1


class SessionFileSink(JsonFileSink):
    """Final session records (not alerts), one JSON line each, as ``analyze --format json``
    writes them: the live sensor's complete record, and what tests compare with the offline one.
    """

    name = "sessions"

    def alert(self, alert: Alert) -> None:
        pass  # alerts have their own outputs

    def session(self, session: Session) -> None:
        self.enqueue(session.severity or "low", eve.dumps(eve.session_event(session)))


class StdoutSink(SpoolingSink):
    name = "stdout"

    def __init__(self, max_spool: int, metrics: Metrics | None = None, out: TextIO | None = None):
        super().__init__(max_spool, metrics)
        self.out = out or sys.stdout

    def deliver(self, severity: str, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


class SyslogSink(SpoolingSink):
    """RFC 3164 messages to a local socket (/dev/log), over UDP, or over TCP (RFC 6587).

    Only the local socket and TCP can tell that a message did not get through: a datagram to a
    host where nobody listens is gone, and the refusal comes back, if at all, one send later. TCP
    frames each message with its length (octet counting), reconnects when the receiver went
    away, and leaves a message spooled until the kernel took all of it.
    """

    name = "syslog"

    def __init__(self, address: str, max_spool: int, metrics: Metrics | None = None) -> None:
        super().__init__(max_spool, metrics)
        self.address = address
        self.transport, self.target = syslog_target(address)
        self._sock: socket.socket | None = None

    def deliver(self, severity: str, line: str) -> None:
        pri = SYSLOG_FACILITY_LOCAL0 * 8 + SYSLOG_SEVERITY.get(severity, 4)
        # JSON from eve.dumps is ASCII with every control character escaped: safe for syslog.
        message = f"<{pri}>rmm-sensor[{os.getpid()}]: {line}".encode()
        sock = self._connect()
        try:
            if self.transport == "tcp":
                sock.sendall(b"%d %s" % (len(message), message))
            else:
                sock.send(message)
        except OSError:
            self._drop_socket()
            raise

    def _connect(self) -> socket.socket:
        if self._sock is not None and self.transport == "tcp" and self._peer_closed(self._sock):
            self._drop_socket()  # the receiver restarted: a new connection, nothing sent is lost
        if self._sock is None:
            target = self.target
            if isinstance(target, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            else:
                family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
                kind = socket.SOCK_STREAM if self.transport == "tcp" else socket.SOCK_DGRAM
                sock = socket.socket(family, kind)
                # An unreachable receiver must not hold up the sensor: the alert stays spooled.
                sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                sock.connect(target)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """The receiver closed or reset the connection (a syslog receiver never sends)."""
        sock.setblocking(False)  # with a timeout set, recv() would wait for data first
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(CONNECT_TIMEOUT_S)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        super().close()
        self._drop_socket()
