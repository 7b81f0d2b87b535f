"""Real uplink batches for server tests, built the way a transformer Pi builds them (CPython only).

``PiBatches(site, transformer)`` turns the 6-tuples of ``phaseuplink.records``'
builders into the MQTT topic and payload the Pi's uplink would publish
(``phasekit.testing.batches.encode``, zlib when shorter), sequencing the Pi's own records
as its buffer does (a session number times 2**32 plus a row id). Nodes'
records keep the sequence numbers the caller gives them.

    pi = PiBatches("s1", "t1")
    topic, payload = pi.batch([records.reading(3, seq, t, [2300, 1500, 3400, 10, 500, 95, 0, 0])])
    core.handle(topic, payload, received_s)
"""

from phasekit.testing import batches
from phaseuplink import topics

__all__ = ("PiBatches", "reading_values")


def reading_values(current_ma=1500, phase=0, status=0, voltage_dv=2300, energy_wh=1000):
    """The 8 values of a plausible reading (msg.READING_FIELDS order)."""
    return [voltage_dv, current_ma, current_ma * voltage_dv // 1000, energy_wh, 500, 95, phase, status]


class PiBatches:
    """Batches of one transformer's records, as its Pi publishes them."""

    def __init__(self, site="s1", transformer="t1", session=12345):
        self.site, self.transformer = site, transformer
        self.session = session
        self._row = 0

    def topic(self, kind):
        return topics.topic_for(self.site, self.transformer, kind)

    def batch(self, items, compress=True):
        """``(topic, payload)`` of one batch; ``items`` are builder tuples of one kind."""
        kinds = {it[0] for it in items}
        assert len(kinds) == 1, kinds
        # The Pi's own records (seq None) are sequenced as its buffer does: session x 2**32 + row id.
        payload = batches.encode(items, pi_seq=self.session * 2**32 + self._row + 1, compress=compress)
        self._row += len(items)
        return self.topic(kinds.pop()), payload

    def status(self, online):
        """The retained status message: ``(topic, payload)``."""
        return topics.status_topic(self.site, self.transformer), b"online" if online else b"offline"
