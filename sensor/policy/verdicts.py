"""Verdicts: is a session one of our sanctioned instances?"""

from __future__ import annotations

import dataclasses

from sensor.model import Session


class Policy:
    """With no sanctioned entries every session is unsanctioned."""

    def judge(self, session: Session) -> Session:
        return dataclasses.replace(
            session, verdict="unsanctioned", verdict_reason="no sanctioned entry matches"
        )
