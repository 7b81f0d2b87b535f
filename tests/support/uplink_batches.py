"""Real uplink batches for server tests, built the way a transformer Pi builds them (CPython only).

``PiBatches(site, transformer)`` turns the 6-tuples of ``phaseuplink.records``'
builders into the MQTT topic and payload the Pi's uplink would publish
(``records.encode_batch``, zlib when shorter), sequencing the Pi's own records
as its buffer does (a session number times 2**32 plus a row id). Nodes'
records keep the sequence numbers the caller gives them.

    pi = PiBatches("s1", "t1")
    topic, payload = pi.batch([records.reading(3, seq, t, [2300, 1500, 3400, 10, 500, 95, 0, 0])])
    core.handle(topic, payload, received_s)
"""

from collections import namedtuple

from phaseuplink import records, topics

__all__ = ("PiBatches", "reading_values")

_Row = namedtuple("_Row", "id kind topic payload sender seq created_s")


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
        rows = []
        for kind, _topic, payload, sender, seq, t_s in items:
            self._row += 1
            if seq is None:  # the Pi's own record: its buffer sequences it
                seq = self.session * 2**32 + self._row
            rows.append(_Row(self._row, kind, kind, payload, sender, seq, t_s))
        payload, _ = records.encode_batch(rows, compress=compress)
        return self.topic(kinds.pop()), payload

    def decoded(self, items):
        """``(kind, records)`` of the same batch after the server's decode (``records.decode_batch``)."""
        topic, payload = self.batch(items)
        kind = topic.rsplit("/", 1)[1]
        b = records.decode_batch(kind, payload)
        assert not b.errors, b.errors
        return kind, list(b.records)
