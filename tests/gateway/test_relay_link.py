"""phasegate.relay and the relay contract (phaseuplink.topics.relay_*, records.decode_relayed): hostile input in mind.

What a LoRa gateway publishes to a Pi's relay topic is opened like a frame the
Pi heard itself: the registry's tag check and replay window. Everything around
the frame (the batch, the gateway's labels and numbers, the topic) is checked,
bounded, and never trusted.
"""

import asyncio
import zlib

import pytest

from phasecore import cbor, frame, msg
from phasegate.registry import Registry
from phasegate.relay import RelayLink
from phasekit.sim.bus_nodes import SimNode
from phaseuplink import records, topics
from phaseuplink.errors import TopicError

KEY = bytes(range(32))
TOPIC = "phasekit/s1/tx-1/relay/gw-01"


class Row:
    def __init__(self, i, wire, src=b"s1/tx-1/5"):
        self.id, self.payload, self.sender, self.seq, self.created_s = i, cbor.dumps(wire), src, i, 1_700_000_000 + i


def batch(wires, **kw):
    return records.encode_batch([Row(i, w, **kw) for i, w in enumerate(wires)])[0]


def wire(node):
    return frame.encode(frame.MASTER, node.addr, node.reading_payload(), frame.LORA_MAX_PAYLOAD)


def test_relay_topics_live_under_the_pis_tree_and_the_server_refuses_them():
    assert topics.relay_topic("s1", "tx-1", "gw-01") == TOPIC
    assert topics.relay_subscription("s1", "tx-1") == "phasekit/s1/tx-1/relay/+"
    assert topics.is_relay(TOPIC) and not topics.is_relay("phasekit/s1/tx-1/reading")
    assert not topics.is_relay("phasekit/s1/tx-1/relay/") and not topics.is_relay(None)
    with pytest.raises(TopicError):
        topics.parse(TOPIC)  # five levels: not the server's tree
    for bad in ("", "a/b", "+", "#"):
        with pytest.raises(TopicError):
            topics.relay_topic("s1", "tx-1", bad)


def test_decode_relayed_takes_what_the_gateway_sends_and_drops_the_rest_alone():
    node = SimNode(5, KEY)
    w1, w2 = wire(node), wire(node)
    got = records.decode_relayed(batch([w1, w2]))
    assert [r.wire for r in got] == [w1, w2] and got[0].sender == b"s1/tx-1/5"
    # A record that is not (label, seq, dt, frame bytes) costs only itself.
    plain = cbor.dumps([1, 100, [[b"x", 1, 0, w1], [5, 1, 0, w1], [b"x", -1, 0, w1], [b"x", 1, 0, "text"], "junk"]])
    assert [r.wire for r in records.decode_relayed(plain)] == [w1]
    assert records.decode_relayed(cbor.dumps([1, 100, [[b"x", 1, 0, b"\x00" * 256]]])) == []  # longer than a frame


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x78\x9c" + b"\x00" * 10,  # not a zlib stream
        zlib.compress(b"\x00" * (5 << 20)),  # inflates past the limit
        cbor.dumps([2, 0, []]),
        cbor.dumps({"a": 1}),
        cbor.dumps([1, -1, []]),
        cbor.dumps([1, 0, [[b"x", 1, 0, b"\x01"]] * 1001]),  # more frames than a gateway puts in a batch
        b"\xff" * 40,
        b"\x83\x01\x00" + b"\x00" * (4 << 20),  # plain and larger than any batch
    ],
)
def test_an_unreadable_relay_batch_is_a_record_error(payload):
    with pytest.raises(records.RecordError):
        records.decode_relayed(payload)


def test_the_relay_link_hands_only_the_pis_nodes_frames_on_once_each(tmp_path):
    node, other = SimNode(5, KEY), SimNode(9, KEY)
    reg = Registry(KEY, {5: "relay"}, tmp_path / "seq", tmp_path / "reg.json")
    link = RelayLink([5], queue_max=10)
    w = wire(node)
    pi_to_node = frame.encode(5, frame.MASTER, node.reading_payload())
    crc_bad = bytearray(wire(node))
    crc_bad[-1] ^= 1
    assert link.deliver(TOPIC, batch([w, w, wire(other), pi_to_node, bytes(crc_bad), b"\x00\x01"])) == 1
    assert link.deliver(TOPIC, batch([w])) == 0  # heard again through a second gateway
    assert link.deliver(TOPIC, b"\x00garbage") == 0
    c = link.counters
    assert (c["duplicates"], c["foreign"], c["bad_frames"], c["bad_batches"]) == (2, 2, 2, 1)
    assert link.gateways == {"gw-01": 1}
    opened = []

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            link.run(stop, lambda addr, reply: opened.append(reg.receive(addr, reply.frame.payload, 0.0)))
        )
        for _ in range(20):
            await asyncio.sleep(0.01)
            if opened:
                break
        # A later frame wakes the link while it waits.
        link.deliver(TOPIC, batch([wire(node)]))
        for _ in range(20):
            await asyncio.sleep(0.01)
            if len(opened) == 2:
                break
        stop.set()
        await task
        assert await link.request(5, b"anything") is None  # no path down

    asyncio.run(main())
    assert [m.kind for m in opened] == [msg.READING, msg.READING] and reg.nodes[5].counters["readings"] == 2


def test_the_relay_links_queue_and_memory_are_bounded():
    node = SimNode(5, KEY)
    link = RelayLink([5], queue_max=5, dedup_max=8)
    for _ in range(4):
        link.deliver(TOPIC, batch([wire(node) for _ in range(5)]))
    assert len(link._queue) == 5 and link.counters["queue_full"] == 15
    assert len(link._seen) <= 8
