"""Every remote-access server seen, and the ones running a version older than the policy allows.

A server is (tool, address, port) of a session on a channel where the far end is the tool's
server (relay, web, download, direct). Names, version and instance key accumulate as sessions
arrive; the table is bounded, dropping the server seen longest ago.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from sensor.model import Session
from sensor.rules.versions import older_than

SERVER_CHANNELS = frozenset(("relay", "web", "download", "direct"))
MAX_NAMES = 8


@dataclass(frozen=True, slots=True)
class Server:
    tool: str
    address: str
    port: int
    names: tuple[str, ...]
    version: str | None
    instance_key: str | None  # ScreenConnect k= key SHA-256
    channels: tuple[str, ...]
    first_ns: int
    last_ns: int
    sessions: int
    sanctioned: bool  # some session with it was sanctioned
    outdated: bool = False


class Inventory:
    def __init__(self, minimum_versions: dict[str, str], max_servers: int = 65_536) -> None:
        self.minimum_versions = minimum_versions
        self.max_servers = max_servers
        self.evicted = 0
        self._servers: OrderedDict[tuple[str, str, int], Server] = OrderedDict()

    def servers(self) -> list[Server]:
        return sorted(self._servers.values(), key=lambda s: (s.tool, s.first_ns, s.address))

    def observe(self, s: Session, new_session: bool = True) -> tuple[Server | None, bool]:
        """Record the session's server; True when it just became known as outdated.

        ``new_session`` is False when the same session was already seen while it ran.
        """
        if s.channel not in SERVER_CHANNELS:
            return None, False
        attrs = dict(s.attributes)
        key = (s.tool, s.dest_ip, s.dest_port)
        old = self._servers.pop(key, None)
        names = [] if old is None else list(old.names)
        for name in (s.server_name, attrs.get("resolved_name"), attrs.get("relay_host")):
            if name and name not in names and len(names) < MAX_NAMES and name != s.dest_ip:
                names.append(name)
        version = attrs.get("server_version") or (old.version if old else None)
        minimum = self.minimum_versions.get(s.tool)
        outdated = bool(version and minimum and older_than(version, minimum))
        server = Server(
            tool=s.tool,
            address=s.dest_ip,
            port=s.dest_port,
            names=tuple(names),
            version=version,
            instance_key=attrs.get("key_sha256") or (old.instance_key if old else None),
            channels=tuple(sorted({s.channel, *(old.channels if old else ())})),
            first_ns=min(s.start_ns, old.first_ns) if old else s.start_ns,
            last_ns=max(s.end_ns, old.last_ns) if old else s.end_ns,
            sessions=(old.sessions if old else 0) + int(new_session),
            sanctioned=(old is not None and old.sanctioned) or s.verdict == "sanctioned",
            outdated=outdated,
        )
        self._servers[key] = server
        if len(self._servers) > self.max_servers:
            self._servers.popitem(last=False)
            self.evicted += 1
        newly = outdated and not (old is not None and old.outdated)
        return server, newly

    def counts(self) -> dict[tuple[str, str], int]:
        """Servers by (tool, "sanctioned"/"unsanctioned"), for a gauge."""
        out: dict[tuple[str, str], int] = {}
        for s in self._servers.values():
            key = (s.tool, "sanctioned" if s.sanctioned else "unsanctioned")
            out[key] = out.get(key, 0) + 1
        return out

    def outdated_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._servers.values():
            if s.outdated:
                out[s.tool] = out.get(s.tool, 0) + 1
        return out
