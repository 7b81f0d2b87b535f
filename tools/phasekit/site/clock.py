"""The simulated site's one clock: site time = epoch_s + (wall - start_s) * speed, handed to every tier.

``SiteClock`` holds the three numbers and gives each tier its form of them:
the ``[clock]`` table of the Pi's and the server's TOML (``toml()``), the
virtual board's ``PHASENODE_CLOCK`` variable (``env()``, read by
``phasenode.hal.host``), and the in-process nodes' tick counter
(``ticks_ms``, with ``speed`` for ``phasenode.app.Node``). The site process
itself reads ``now()`` for the physics and the fault plan.

The one thing to know: ``start_s`` may lie in the future. The site starts its
processes first and puts the feeder's midnight (``epoch_s``) a few wall seconds
later, so every tier is up when the day begins; until then site time runs in
the evening before.
"""

from __future__ import annotations

import json
import time

__all__ = ("SiteClock",)


class SiteClock:
    """``SiteClock(speed, epoch_s, start_s)``; ``now()`` site Unix seconds; ``real(site_s)`` wall seconds."""

    def __init__(self, speed: float, epoch_s: float, start_s: float):
        if not 1 <= speed <= 10000:
            raise ValueError("speed %r outside 1..10000" % (speed,))
        self.speed = float(speed)
        self.epoch_s = float(epoch_s)
        self.start_s = float(start_s)
        # The in-process nodes' ticks count from here (a node's clock has no calendar).
        self._mono0 = time.monotonic()

    def now(self) -> float:
        """Site time, Unix seconds."""
        return self.epoch_s + (time.time() - self.start_s) * self.speed

    def day_s(self) -> float:
        """Site seconds since the epoch (the feeder day's midnight); negative before it."""
        return (time.time() - self.start_s) * self.speed

    def real(self, site_s: float) -> float:
        """Wall seconds that ``site_s`` of site time take."""
        return max(0.0, site_s) / self.speed

    def wall_at(self, day_s: float) -> float:
        """The wall time (Unix seconds) at which site time is ``epoch_s + day_s``."""
        return self.start_s + day_s / self.speed

    def ticks_ms(self) -> int:
        """Milliseconds of site time on a monotonic counter: an in-process node's clock."""
        return int((time.monotonic() - self._mono0) * self.speed * 1000.0)

    def table(self) -> dict[str, float]:
        """The ``[clock]`` table's keys (the Pi's and the server's TOML)."""
        return {"speed": self.speed, "epoch_s": self.epoch_s, "start_s": self.start_s}

    def toml(self) -> str:
        """The ``[clock]`` table as TOML text."""
        return "[clock]\nspeed = %r\nepoch_s = %r\nstart_s = %r\n" % (self.speed, self.epoch_s, self.start_s)

    def env(self) -> str:
        """The virtual board's ``PHASENODE_CLOCK`` value (JSON)."""
        return json.dumps(self.table(), sort_keys=True)

    def clock_text(self, site_s: float) -> str:
        """``HH:MM`` of the feeder day for a site time (``D+1 HH:MM`` past midnight, ``-HH:MM`` before)."""
        d = site_s - self.epoch_s
        sign = "-" if d < 0 else ""
        m = int(abs(d) // 60)
        day, m = divmod(m, 1440)
        if sign:
            return "-%02d:%02d" % divmod(m, 60)
        return ("D+%d " % day if day else "") + "%02d:%02d" % divmod(m, 60)
