"""What the controller records, written to the store-and-forward buffer before anything else.

The controller calls four methods; each turns what happened into uplink
records (``phaseuplink.records``) and commits them to the SQLite buffer
(``phasegate.store``) at once, then wakes the uplink. Committing each message
as it is accepted, not once per polling round, is what makes "nothing the Pi
accepted is ever lost" hold across a SIGKILL at any point: a reading is either
in the WAL or was never acknowledged to anyone.

    journal = Journal(store, registry, uplink)
    journal.received(incoming, t_s)            # a node's reading, event or heartbeat (registry.Incoming)
    journal.command(fields, ack_or_None, t_s)  # a command and the node's ack (or none)
    journal.pi_event(addr, code, value, alarm, t_s)
    journal.summary(fields, t_s)               # phasecore.msg summary fields, once per period

A record the builders refuse (``RecordError``: a value outside the uplink
schema) is logged and counted in ``stats["refused"]``; it never stops the
control loop. A store that cannot be written (``StoreError``: disk full,
broken card) propagates: the Pi must not pretend to buffer what it cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec

from phasecore import msg
from phaseuplink import records

if TYPE_CHECKING:
    from phasegate.registry import Incoming, Registry
    from phasegate.store import Store
    from phasegate.uplink import Uplink

log = logging.getLogger(__name__)

__all__ = ("Journal", "BUFFERED_READING")

# Logged (DEBUG) right after a reading's buffer commit: a line is a reading the
# buffer holds. Harnesses that prove "nothing accepted is lost" count these
# lines (phasekit.testing.gateway parses them); keep the format stable.
BUFFERED_READING = "buffered reading node=%d gen=%d seq=%d"

_SEVERITY_INFO = 0
_SEVERITY_ALARM = 2

_P = ParamSpec("_P")


class Journal:
    """Controller events -> records -> the store; ``uplink.wake()`` after each commit when given."""

    def __init__(self, store: Store, registry: Registry, uplink: Uplink | None = None):
        self.store = store
        self.registry = registry
        self.uplink = uplink
        self.stats = {"records": 0, "refused": 0}

    def received(self, m: Incoming, t_s: float) -> None:
        """A message a node sent that the registry accepted (reading, event or heartbeat)."""
        gen = self._generation(m.addr)
        if m.kind == msg.READING:
            if self._put(records.reading, m.addr, m.seq, t_s, m.body, generation=gen):
                log.debug(BUFFERED_READING, m.addr, gen, m.seq)  # after the commit (see BUFFERED_READING)
        elif m.kind == msg.EVENT:
            self._put(records.event, t_s, m.body, addr=m.addr, seq=m.seq, generation=gen)
        elif m.kind == msg.HEARTBEAT:
            self._put(records.heartbeat, t_s, m.body, m.addr, m.seq, generation=gen)

    def command(self, fields: records.Fields, ack: Incoming | None, t_s: float) -> None:
        """A command sent to a node with the node's ack (``registry.Incoming``) or None if none came."""
        if ack is None:
            self._put(records.ack, t_s, fields)
        else:
            self._put(
                records.ack, t_s, fields, ack.body, addr=ack.addr, seq=ack.seq, generation=self._generation(ack.addr)
            )

    def pi_ack(self, fields: records.Fields, ack: records.Fields, t_s: float) -> None:
        """A command the Pi carried out itself (PAUSE, RESUME for node 0) with its own ack fields (src 0)."""
        self._put(records.ack, t_s, fields, ack, addr=0)

    def pi_event(self, addr: int, code: int, value: float, alarm: bool, t_s: float) -> None:
        """An event of the Pi's own, about node ``addr`` (0: about the transformer or the Pi)."""
        fields: dict[str, int] = {
            "code": code,
            "value": int(value),
            "time_s": int(t_s),
            "severity": _SEVERITY_ALARM if alarm else _SEVERITY_INFO,
        }
        if 1 <= addr <= 247:
            fields["node"] = addr
        self._put(records.event, t_s, fields)

    def summary(self, fields: records.Fields, t_s: float) -> None:
        if self.uplink is not None and "backlog" not in fields:
            fields = dict(fields, backlog=min(len(self.store), 0xFFFFFFFF))
        self._put(records.summary, t_s, fields)

    def _generation(self, addr: int) -> int:
        node = self.registry.nodes.get(addr)
        return node.generation if node is not None else 0

    def _put(self, build: Callable[_P, records.Item], *args: _P.args, **kwargs: _P.kwargs) -> bool:
        try:
            item = build(*args, **kwargs)
        except records.RecordError as e:
            self.stats["refused"] += 1
            log.warning("record not buffered: %s", e)
            return False
        self.store.put_many([item])
        self.stats["records"] += 1
        if self.uplink is not None:
            self.uplink.wake()
        return True
