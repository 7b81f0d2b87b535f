"""Notifications end to end: alarms raised from real uplink batches, the outbox on both stores (SQLite,
PostgreSQL), delivered to a real SMTP server (aiosmtpd) and a real HTTP receiver that fails the first attempts.
One notification per episode and transition, escalation to the second lists, notice on clear, retries with
back-off in the delivery log, a bounded outbox that is counted and alarmed, and a notifier that hangs without
slowing the engine."""

import asyncio
import socket
import time

import pytest
from aiosmtpd.controller import Controller
from test_notify_email import Sink
from test_notify_webhook import SECRET, Receiver

from phasecore import codes
from phasekit.testing.broker import free_port
from phaseserver.alarms.engine import AlarmEngine
from phaseserver.alarms.rules import NOTIFY_BACKLOG, RELAY_FAULT
from phaseserver.alarms.settings import AlarmSettings
from phaseserver.clock import Clock
from phaseserver.ingest.core import IngestCore
from phaseserver.notify.dispatch import Dispatcher
from phaseserver.notify.settings import NotifySettings
from phaseserver.notify.webhook import WebhookChannel, verify
from phaseserver.store import open_store
from phaseuplink import records
from server_support import drain_dispatcher
from uplink_batches import PiBatches

T0 = 1_700_000_000


class World:
    def __init__(self, config, smtp_port, webhook_url, escalate_url="", **notify):
        self.t = [float(T0)]
        self.clock = Clock(wall=lambda: self.t[0])
        store = open_store(config, self.clock)
        self.db = store.db
        self.core = IngestCore(store, self.clock)
        self.db.execute("INSERT INTO tenant (id, name, created_s) VALUES ('utility-a', 'A', 0)")
        self.db.execute("INSERT INTO site (id, tenant_id, first_seen_s) VALUES ('s1', 'utility-a', 0)")
        settings = dict(
            email_host="127.0.0.1",
            email_port=smtp_port,
            email_security="none",
            email_from="phasekit@example.org",
            email_to=["ops@example.org"],
            email_escalate_to=["duty@example.org"],
            email_timeout_s=3,
            webhook_url=webhook_url,
            webhook_escalate_url=escalate_url,
            webhook_timeout_s=2,
            backoff_s=0.05,
            backoff_max_s=0.2,
            escalate_after_s=600,
        )
        settings.update(notify)
        self.notify = NotifySettings(webhook_secret=SECRET, **settings)
        self.dispatcher = Dispatcher(self.db, self.notify)
        self.engine = AlarmEngine(self.db, AlarmSettings(), self.clock, self.dispatcher)
        self.engine.start()
        self.core.listeners.append(self.engine.on_committed)
        self.pi = PiBatches("s1", "t1")

    def at(self, t):
        self.t[0] = float(T0 + t)

    def feed(self, items):
        topic, payload = self.pi.batch(items)
        return self.core.handle(topic, payload, self.clock.now())

    def event(self, t, fields, **kw):
        self.at(t)
        return self.feed([records.event(T0 + t, fields, **kw)])

    def relay_fault(self, t, node=5, code=codes.EV_MOVE_NOT_VERIFIED):
        return self.event(t, {"code": code, "value": 0, "node": node, "severity": 2})

    def drain(self, until, timeout_s=10.0):
        """Run the dispatcher's loop until ``until()`` holds (or fail after timeout_s)."""
        drain_dispatcher(self.dispatcher, until, self.outbox, timeout_s)

    def outbox(self):
        return self.db.fetchall(
            "SELECT alarm_id, transition, channel, target, state, attempts FROM notification ORDER BY id"
        )


@pytest.fixture
def config(engine, server_config):
    return server_config(engine)


@pytest.fixture
def smtp():
    sink = Sink()
    c = Controller(sink, hostname="127.0.0.1", port=free_port())
    c.start()
    yield c.port, sink
    c.stop()


def test_one_notification_per_transition_with_retries_escalation_and_clear(config, smtp):
    port, sink = smtp
    with Receiver([(503, {}), (503, {"Retry-After": "0"})]) as hook, Receiver() as duty:
        w = World(config, port, hook.url, escalate_url=duty.url)
        w.relay_fault(10)
        w.relay_fault(11, code=codes.EV_NODE_SUSPENDED)  # updated in place: no second notice
        w.relay_fault(12)
        (alarm_id,) = {r[0] for r in w.outbox()}
        assert [r[1:4] for r in w.outbox()] == [("raised", "email", "to"), ("raised", "webhook", "url")]
        w.drain(lambda: all(r[4] == "sent" for r in w.outbox()))
        # The receiver failed twice: three attempts of the same delivery id, then sent.
        assert [h["Phasekit-Delivery"] for h, _, _ in hook.requests] == [hook.requests[0][0]["Phasekit-Delivery"]] * 3
        for headers, body, received in hook.requests:
            verify(SECRET, headers["Phasekit-Timestamp"], headers["Phasekit-Signature"], body, now=received)
        log = {n["channel"]: n for n in w.dispatcher.log_of(alarm_id)}
        assert [a["status"] for a in log["webhook"]["log"]] == ["503", "503", "200"]
        assert [a["ok"] for a in log["webhook"]["log"]] == [False, False, True]
        assert log["webhook"]["log"][1]["wall_s"] - log["webhook"]["log"][0]["wall_s"] >= 0.025  # backed off
        assert [a["status"] for a in log["email"]["log"]] == ["250"]
        assert [m["to"] for m in sink.messages] == [["ops@example.org"]]

        # Not acknowledged within escalate_after_s (site time): the second lists hear of it, once.
        w.at(10 + 599)
        w.engine.sweep()
        assert not [r for r in w.outbox() if r[1] == "escalated"]
        w.at(10 + 600)
        w.engine.sweep()
        w.engine.sweep()
        esc = [r[1:4] for r in w.outbox() if r[1] == "escalated"]
        assert esc == [("escalated", "email", "escalate_to"), ("escalated", "webhook", "escalate_url")]
        w.drain(lambda: all(r[4] == "sent" for r in w.outbox()))
        assert (
            sink.messages[-1]["to"] == ["duty@example.org"] and "ESCALATED" in sink.messages[-1]["message"]["Subject"]
        )
        assert len(duty.requests) == 1

        # The end of the episode goes to everyone who heard of it.
        w.relay_fault(1000, code=codes.EV_MOVE_VERIFIED)
        w.relay_fault(1001, code=codes.EV_MOVE_VERIFIED)
        w.drain(lambda: all(r[4] == "sent" for r in w.outbox()))
        cleared = sorted(r[2:4] for r in w.outbox() if r[1] == "cleared")
        assert cleared == [("email", "escalate_to"), ("email", "to"), ("webhook", "escalate_url"), ("webhook", "url")]
        # Exactly one successful delivery per (transition, channel, target): no duplicates.
        ok = [(r[1], r[2], r[3]) for r in w.outbox() if r[4] == "sent"]
        assert len(ok) == len(set(ok)) == 8
        assert len(sink.messages) == 4
        assert [(h["Phasekit-Delivery"], b.count(b'"transition":"cleared"')) for h, b, _ in duty.requests][-1][1] == 1
        assert w.dispatcher.stats["dropped"] == 0 and w.dispatcher.stats["retried"] == 2
        w.db.close()


def test_alarms_below_min_severity_are_listed_not_notified_and_final_refusals_stop(config, smtp):
    port, sink = smtp
    with Receiver([(400, {})]) as hook:
        w = World(config, port, hook.url, min_severity="major")
        w.at(0)
        w.feed([records.pi_heartbeat(T0, {"uptime_s": 1, "fw": "x", "backlog": 50000, "dropped": 0})])  # a warning
        assert w.engine.store.active() and w.outbox() == []
        w.at(10)
        w.feed([records.pi_heartbeat(T0 + 10, {"uptime_s": 2, "fw": "x", "backlog": 0, "dropped": 0})])
        assert w.outbox() == []  # nobody heard of it, nobody hears of its end
        w.relay_fault(20)
        w.drain(lambda: all(r[4] in ("sent", "failed") for r in w.outbox()))
        states = {r[2]: (r[4], r[5]) for r in w.outbox()}
        assert states == {"email": ("sent", 1), "webhook": ("failed", 1)}  # 400 is final: one attempt
        w.db.close()


def test_a_full_outbox_is_counted_alarmed_and_drains(config, smtp):
    port, sink = smtp
    down = "http://127.0.0.1:%d/" % free_port()  # nothing listens: every attempt fails and is retried
    w = World(config, port, down, queue_max=3, email_host="", backoff_s=30, backoff_max_s=60)
    for node in range(1, 6):
        w.relay_fault(10 + node, node=node)
    states = [r[4] for r in w.outbox()]
    assert states == ["pending"] * 3 + ["dropped"] * 2
    assert w.dispatcher.stats["dropped"] == 2 and w.dispatcher.backlogged
    w.engine.sweep()
    (b,) = [a for a in w.engine.store.active() if a["type"] == NOTIFY_BACKLOG]
    assert b["object"] == "server" and b["tenant_id"] == "system" and b["detail"]["dropped"] == 2
    assert w.engine.store.active("utility-a") and not [
        a for a in w.engine.store.active("utility-a") if a["type"] == NOTIFY_BACKLOG
    ]
    # The receiver comes back: the pending ones go, the backlog alarm clears.
    with Receiver() as hook:
        w.dispatcher.webhook = WebhookChannel(hook.url, SECRET)
        w.db.execute("UPDATE notification SET next_wall_s = 0 WHERE state = 'pending'")
        w.drain(lambda: not [r for r in w.outbox() if r[4] == "pending"])
        assert len(hook.requests) == 3
    w.engine.sweep()
    assert not [a for a in w.engine.store.active() if a["type"] == NOTIFY_BACKLOG]
    w.db.close()


@pytest.mark.parametrize("engine", ["sqlite"])  # a question of threads, not of the store: one engine is enough
def test_a_hanging_notifier_never_slows_the_engine(config):
    # An SMTP server and a webhook receiver that accept connections and never answer.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        w = World(config, port, "http://127.0.0.1:%d/" % port, email_timeout_s=1, webhook_timeout_s=1)

        async def go():
            stop = asyncio.Event()
            task = asyncio.create_task(w.dispatcher.run(stop, poll_s=0.02))
            times = []
            for node in range(1, 41):
                t0 = time.perf_counter()
                await asyncio.to_thread(w.relay_fault, 10 + node, node)
                times.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)
            stop.set()
            await task
            return times

        times = asyncio.run(go())
        assert len(w.engine.store.active()) == 40
        assert max(times) < 0.5, max(times)  # each raise is a local transaction, whatever the notifier does
        assert sorted(times)[len(times) // 2] < 0.05
        assert w.dispatcher.stats["sent"] == 0
    finally:
        silent.close()
    w.db.close()


def test_relay_fault_raised_once_however_often_the_batch_arrives(config, smtp):
    port, sink = smtp
    with Receiver() as hook:
        w = World(config, port, hook.url)
        w.at(10)
        topic, payload = w.pi.batch(
            [records.event(T0 + 10, {"code": codes.EV_MOVE_NOT_VERIFIED, "node": 3, "severity": 2})]
        )
        outcomes = [w.core.handle(topic, payload, w.clock.now() + i).kind for i in range(5)]  # redelivered
        assert outcomes == ["stored"] + ["duplicate"] * 4
        w.drain(lambda: all(r[4] == "sent" for r in w.outbox()))
        assert len([a for a in w.engine.store.query(None, "all") if a["type"] == RELAY_FAULT]) == 1
        assert len(hook.requests) == 1 and len(sink.messages) == 1
        w.db.close()
