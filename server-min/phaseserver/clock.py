"""The server's clock: where every time-dependent decision gets "now" from.

Logic never calls ``time.time()`` itself; it is handed a ``Clock`` and asks
``clock.now()`` (Unix seconds, float). The default runs at wall time. The
accelerated site demo (issue 15) runs the server in *site time*: the ``[clock]``
table sets ``speed`` (1..10000), ``epoch_s`` (the site time at start) and
``start_s`` (the wall time that corresponds to it), and then

    site time = epoch_s + (wall - start_s) * speed

The one thing to know: only what is about the site (alarm gaps, escalation,
retention, the accepted window of record times) reads this clock. What a
browser or a token checks against its own wall clock (cookie and JWT
lifetimes, HTTP dates) stays on the wall clock, and so do timeouts of I/O;
``Clock.wall`` gives that, and ``wall_delay`` converts a site-time duration into
the wall-time wait that covers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from phasecore.errors import quote

__all__ = ("Clock", "SPEED_MAX")

SPEED_MAX = 10000.0


class Clock:
    """``Clock()`` is the wall clock; ``Clock(speed=60, epoch_s=...)`` runs site time 60 times faster."""

    def __init__(
        self,
        speed: float = 1.0,
        epoch_s: float | None = None,
        start_s: float | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 1.0 <= speed <= SPEED_MAX:
            raise ValueError("clock speed %s outside 1..%d" % (quote(speed), SPEED_MAX))
        self._wall = wall
        now = wall()
        self.speed = float(speed)
        self.start_s = float(now if start_s is None else start_s)
        self.epoch_s = float(self.start_s if epoch_s is None else epoch_s)

    def now(self) -> float:
        """Site time, Unix seconds (the wall clock when speed is 1 and epoch is start)."""
        return self.epoch_s + (self._wall() - self.start_s) * self.speed

    def wall(self) -> float:
        """Wall time, Unix seconds: for what a browser, a token or a socket timeout is checked against."""
        return self._wall()

    def wall_delay(self, site_s: float) -> float:
        """Wall seconds that cover ``site_s`` seconds of site time."""
        return max(0.0, site_s) / self.speed

    @property
    def is_wall(self) -> bool:
        """True when site time is wall time."""
        return self.speed == 1.0 and self.epoch_s == self.start_s

    def __repr__(self) -> str:
        return "Clock(speed=%g, epoch_s=%.0f, start_s=%.0f)" % (self.speed, self.epoch_s, self.start_s)
