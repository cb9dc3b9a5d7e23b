"""A throw-away network namespace with a veth pair: the test bench for replaying captures.

``veth-a`` is the replay side (tcpreplay sends there), ``veth-b`` the capture side (the sensor
listens there). Both ends live in the namespace, so nothing needs more than root and iproute2,
and nothing reaches the host's interfaces. Used by the live benchmarks and the live tests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Self

# Run inside the namespace: no IPv6, so the kernel sends nothing of its own on the pair
# (router solicitations, MLD) to be counted among the replayed packets.
NO_IPV6 = """\
for scope in ("all", "default"):
    with open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as f:
        f.write("1")
"""


class CommandFailed(RuntimeError):
    """A command in the namespace exited with an error (its stderr is the message)."""


class Namespace:
    """One namespace; ``created()`` builds it and removes it, with every process started in it."""

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 60) -> str:
        """Run to completion inside the namespace; its standard output."""
        done = subprocess.run(
            self.cmd(*argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise CommandFailed(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start in the background, output to ``log``; stopped when the namespace goes."""
        # `ip netns exec` execs the command, so the process id is the command's own.
        with log.open("wb") as out:
            proc = subprocess.Popen(self.cmd(*argv), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def link(self, state: str) -> None:
        """Take the capture side down or up."""
        self.run("ip", "link", "set", "veth-b", state)

    @contextlib.contextmanager
    def created(self) -> Iterator[Self]:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.run(sys.executable, "-I", "-c", NO_IPV6)
            # Some captures hold frames larger than 1500 bytes (offloaded segments).
            self.run("ip", "link", "add", "veth-a", "mtu", "65535", "type", "veth",
                     "peer", "name", "veth-b", "mtu", "65535")  # fmt: skip
            for link in ("lo", "veth-a", "veth-b"):
                self.run("ip", "link", "set", link, "up")
            yield self
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()  # the sensor's workers follow their supervisor out
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
