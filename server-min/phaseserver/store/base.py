"""The Store interface both engines implement, and the row types its queries return.

``phaseserver.store.open_store(config)`` gives a ``Store``: SQLite
(``store.sqlite``, the embedded default) or PostgreSQL (``store.postgres``).
Both run the same test suite (tests/server, a fixture parametrized by
engine). The one thing to know: every query that returns site data takes the
tenant first and filters by it in SQL (``tenant=None`` is the system
administrator's view across tenants, for the CLI and the system role only).

Writing (the ingest core calls these, one transaction each):

- ``add_batch(site, transformer, kind, records, received_s) -> (new, duplicates)``
- ``count_invalid(site, transformer, batches=, records=)``, ``count(site, transformer, name, n)``
- ``dead_letter(...)``, ``set_status(site, transformer, status, received_s)``

Maintenance: ``migrate()``, ``rollup()``, ``retention(now)``, ``backup(path)``, ``close()``.

Queries (the API serves them): ``fleet``, ``transformer``, ``series``,
``nodes``, ``readings``, ``moves``, ``records``, ``export_csv``,
``dead_letters``, ``counters``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from phaseserver.store.db import Database
from phaseuplink.records import Record

__all__ = (
    "Store",
    "UNASSIGNED",
    "PHASES",
    "FleetRow",
    "NodeRow",
    "SeriesPoint",
    "DeadLetter",
    "RESOLUTIONS",
)

# The tenant a site first seen by ingest belongs to until someone assigns it (system administrator only).
UNASSIGNED = "unassigned"
PHASES = ("A", "B", "C")
# Series resolutions a query may ask for (seconds): the minute series, hourly and daily roll-ups.
RESOLUTIONS = (60, 300, 900, 3600, 86400)


class FleetRow(NamedTuple):
    """One transformer in the fleet view."""

    tenant_id: str
    site: str
    transformer: str
    name: str | None
    status: str | None  # the Pi's retained status: online / offline (None: never seen)
    status_s: float | None
    last_seen_s: float | None  # server time of the newest record stored
    last_t_s: int | None  # the newest record's own time
    nodes: int
    fw: str | None
    backlog: int | None


class NodeRow(NamedTuple):
    """One node of a transformer (one row per key generation it was seen under)."""

    src: int
    addr: int
    generation: int
    phase: int | None
    status: int | None
    last_t_s: int | None
    last_seen_s: float | None
    fw: str | None


class SeriesPoint(NamedTuple):
    """One step of a transformer's series: phase currents, neutral and CUF (None where no data)."""

    t_s: int
    i_a: float  # amperes, mean over the step
    i_b: float
    i_c: float
    i_n: float  # neutral, amperes (phasor sum of the phase currents)
    cuf: float  # current unbalance factor, a fraction (phasecore.metrics.cuf)
    i_max: float  # the highest phase current in the step (minute values)
    minutes: int  # minutes with data in the step


class DeadLetter(NamedTuple):
    id: int
    tenant_id: str
    received_s: float
    source: str
    topic: str
    site: str | None
    transformer: str | None
    kind: str | None
    reason: str
    payload_len: int
    payload_prefix: bytes


class Store(Protocol):
    """What the ingest, the API, the alarms and the CLI may ask of storage."""

    db: Database
    engine: str

    def migrate(self) -> list[int]: ...

    def close(self) -> None: ...

    # -- writing
    def prepare(self, spans: Sequence[tuple[str, int, int]]) -> None: ...

    def add_batch(
        self, site: str, transformer: str, kind: str, records: Sequence[Record], received_s: float
    ) -> tuple[int, int]: ...

    def count_invalid(self, site: str, transformer: str, batches: int = 0, records: int = 0) -> None: ...

    def dead_letter(
        self,
        topic: str,
        payload_prefix: bytes,
        reason: str,
        received_s: float,
        payload_len: int | None = None,
        source: str = "mqtt",
    ) -> None: ...

    def set_status(self, site: str, transformer: str, status: str, received_s: float) -> None: ...

    def count(self, site: str, transformer: str, name: str, n: int = 1) -> None: ...

    def assign_site(self, site: str, tenant: str) -> int: ...

    # -- maintenance
    def rollup(self, limit: int = 10000) -> int: ...

    def retention(self, now_s: float) -> dict[str, int]: ...

    def backup(self, path: str) -> None: ...

    # -- queries
    def fleet(self, tenant: str | None) -> list[FleetRow]: ...

    def nodes(self, tenant: str | None, site: str, transformer: str) -> list[NodeRow]: ...

    def series(
        self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int, step_s: int = 60
    ) -> list[SeriesPoint]: ...

    def readings(
        self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int, src: int | None = None
    ) -> list[tuple[Any, ...]]: ...

    def moves(self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int) -> list[dict]: ...

    def export_csv(
        self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int, what: str = "readings"
    ) -> Iterator[str]: ...

    def dead_letters(self, tenant: str | None, limit: int = 100, before_id: int | None = None) -> list[DeadLetter]: ...

    def counters(self, tenant: str | None = None, site: str | None = None, transformer: str | None = None) -> dict: ...

    def transformer(self, tenant: str | None, site: str, transformer: str) -> FleetRow | None: ...

    def records(
        self,
        tenant: str | None,
        site: str,
        transformer: str,
        kind: str,
        start_s: int = 0,
        end_s: int = 2**32,
        limit: int = 1000,
    ) -> list[dict[str, Any]]: ...

    def count_rows(self, table: str, site: str | None = None, transformer: str | None = None) -> int: ...

    def prune_dead_letters(self) -> int: ...
