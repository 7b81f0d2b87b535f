"""The transformer Pi's clock: site time, possibly faster than the wall clock (the simulated site).

Everything of the Pi that is about the *site* (the control round, the polling
period, liveness, command deadlines, the time on every record, the uplink's
cadence) asks one ``Clock``. A Pi in the field runs at wall time: ``Clock()``.
The simulated site (``phasekit site run``, docs/site.md) hands every tier the
same three numbers in a ``[clock]`` table (the server reads the same table):

    site time = epoch_s + (wall - start_s) * speed

``speed`` 1..10000 (default 1); ``epoch_s`` the site time at ``start_s``;
``start_s`` a wall time (Unix seconds). 0 for either means "when this process
starts", so an empty table is the wall clock.

The one thing to know: only *site* durations are scaled. What is bound to the
physics of a link (a reply timeout on RS-485, a TLS handshake, a reconnect
back-off, an ack timeout) stays in wall seconds: a serial line at 115200 baud
carries a poll in the same milliseconds at any speed. ``real(site_s)`` converts
a site duration into the wall-time wait that covers it.

Public: ``Clock``, ``SCHEMA`` (the ``[clock]`` table), ``SPEED_MAX``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import phaseconf
from phasecore.errors import quote

__all__ = ("Clock", "SCHEMA", "SPEED_MAX")

SPEED_MAX = 10000.0


def _clock_time(v: object) -> str | None:
    # 0: the moment the process starts; else a Unix time in seconds.
    return phaseconf.number(0, 2**32, " (Unix seconds; 0 = start time)")(v)


# The [clock] table of the gateway config (phasegate.config): the same keys as the server's.
SCHEMA: dict[str, phaseconf.Spec] = {
    "speed": ((int, float), 1, phaseconf.number(1, SPEED_MAX)),
    "epoch_s": ((int, float), 0, _clock_time),
    "start_s": ((int, float), 0, _clock_time),
}


class Clock:
    """``Clock()``: wall time. ``Clock(speed=720, epoch_s=E, start_s=S)``: site time 720 times faster.

    ``wall()`` is site time in Unix seconds (what records, deadlines and the
    node's clock carry); ``monotonic()`` is a monotonic site clock in seconds
    (the control round, liveness, verification deadlines); ``real(site_s)``
    the wall seconds that ``site_s`` of site time take.
    """

    def __init__(
        self,
        speed: float = 1.0,
        epoch_s: float | None = None,
        start_s: float | None = None,
        wall: Callable[[], float] = time.time,
    ):
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 1.0 <= speed <= SPEED_MAX:
            raise ValueError("clock speed %s outside 1..%d" % (quote(speed), SPEED_MAX))
        self._wall = wall
        now = wall()
        self.speed = float(speed)
        self.start_s = float(now if not start_s else start_s)
        self.epoch_s = float(self.start_s if not epoch_s else epoch_s)

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None) -> Clock:
        """From a checked ``[clock]`` table (None or empty: the wall clock)."""
        t = dict(table or {})
        return cls(t.get("speed", 1), t.get("epoch_s") or None, t.get("start_s") or None)

    def wall(self) -> float:
        """Site time, Unix seconds (the wall clock when speed is 1 and epoch is start)."""
        return self.epoch_s + (self._wall() - self.start_s) * self.speed

    def monotonic(self) -> float:
        """A monotonic site clock in seconds (origin arbitrary): the event loop's clock times ``speed``."""
        return asyncio.get_running_loop().time() * self.speed

    def real(self, site_s: float) -> float:
        """Wall seconds that cover ``site_s`` seconds of site time (never negative)."""
        return max(0.0, site_s) / self.speed

    @property
    def is_wall(self) -> bool:
        """True when site time is wall time."""
        return self.speed == 1.0 and self.epoch_s == self.start_s

    def __repr__(self) -> str:
        return "Clock(speed=%g, epoch_s=%.0f, start_s=%.0f)" % (self.speed, self.epoch_s, self.start_s)
