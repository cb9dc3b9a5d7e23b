"""Configuration reloads on SIGHUP and on file change; a bad file never replaces a good one."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sensor.config import Settings, load_settings
from sensor.yamlsource import SourceError

if TYPE_CHECKING:
    from sensor.metrics import Metrics

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Holds the last good settings and swaps in a new file only when it validates."""

    def __init__(
        self,
        path: str,
        settings: Settings,
        apply: Callable[[Settings], None],
        metrics: Metrics | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.path = path
        self.settings = settings
        self.apply = apply
        self.metrics = metrics
        self.poll_s = poll_s
        self.requested = False  # set from a SIGHUP handler
        self.failures = 0
        self._stamp = self._file_stamp()
        self._next_poll = time.monotonic() + poll_s
        if metrics is not None:
            metrics.config_ok.set(1)
            metrics.config_last_success.set(time.time())

    def request(self) -> None:
        self.requested = True

    def check(self) -> bool:
        """Reload when asked or when the file changed; return True when new settings apply."""
        now = time.monotonic()
        if not self.requested and now < self._next_poll:
            return False
        self._next_poll = now + self.poll_s
        stamp = self._file_stamp()
        if not self.requested and stamp == self._stamp:
            return False
        self.requested = False
        self._stamp = stamp
        try:
            new = load_settings(self.path)
        except SourceError as exc:
            self.failures += 1
            log.error("configuration not reloaded, keeping the last good one: %s", exc)
            if self.metrics is not None:
                self.metrics.config_reloads.labels("failure").inc()
                self.metrics.config_ok.set(0)
            return False
        self.settings = new
        self.apply(new)
        log.warning("configuration reloaded from %s", self.path)
        if self.metrics is not None:
            self.metrics.config_reloads.labels("success").inc()
            self.metrics.config_ok.set(1)
            self.metrics.config_last_success.set(time.time())
        return True

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)
