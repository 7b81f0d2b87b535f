"""Per-tenant recipients ([notify.tenants."TENANT"]): alarms of two tenants, one with its own recipients, reach a
real SMTP server (aiosmtpd) and real HTTP receivers; the tenant's webhooks are signed with its own secret, the
other tenant falls back to the server-wide lists; bad tenant tables are refused naming file, line and key."""

import pytest
from aiosmtpd.controller import Controller
from test_notify_email import Sink
from test_notify_webhook import SECRET, Receiver

from phasecore import codes
from phasekit.testing.broker import free_port
from phaseserver import config as server_config_module
from phaseserver.alarms.engine import AlarmEngine
from phaseserver.alarms.settings import AlarmSettings
from phaseserver.clock import Clock
from phaseserver.errors import ConfigError
from phaseserver.ingest.core import IngestCore
from phaseserver.notify.dispatch import Dispatcher
from phaseserver.notify.settings import NotifySettings
from phaseserver.notify.webhook import SignatureError, verify
from phaseserver.store import open_store
from phaseuplink import records
from server_support import drain_dispatcher
from uplink_batches import PiBatches

T0 = 1_700_000_000
TENANT_SECRET = b"the-secret-of-utility-a-only-0123"
HEAD = '[ingest]\nsource = "none"\n'


@pytest.fixture
def smtp():
    sink = Sink()
    c = Controller(sink, hostname="127.0.0.1", port=free_port())
    c.start()
    yield c.port, sink
    c.stop()


class Sites:
    """utility-a owns s1 (its own recipients), utility-b owns s2 (none: the server-wide lists)."""

    def __init__(self, config, notify):
        self.t = [float(T0)]
        self.clock = Clock(wall=lambda: self.t[0])
        store = open_store(config, self.clock)
        self.db = store.db
        self.core = IngestCore(store, self.clock)
        for tenant, site in (("utility-a", "s1"), ("utility-b", "s2")):
            self.db.execute("INSERT INTO tenant (id, name, created_s) VALUES (?, ?, 0)", (tenant, tenant))
            self.db.execute("INSERT INTO site (id, tenant_id, first_seen_s) VALUES (?, ?, 0)", (site, tenant))
        self.dispatcher = Dispatcher(self.db, notify)
        self.engine = AlarmEngine(self.db, AlarmSettings(), self.clock, self.dispatcher)
        self.engine.start()
        self.core.listeners.append(self.engine.on_committed)
        self.pis = {"s1": PiBatches("s1", "t1"), "s2": PiBatches("s2", "t1")}

    def at(self, t):
        self.t[0] = float(T0 + t)

    def relay_fault(self, site, t):
        self.at(t)
        fields = {"code": codes.EV_MOVE_NOT_VERIFIED, "value": 0, "node": 5, "severity": 2}
        topic, payload = self.pis[site].batch([records.event(T0 + t, fields)])
        return self.core.handle(topic, payload, self.clock.now())

    def outbox(self):
        return self.db.fetchall(
            "SELECT n.tenant_id, n.transition, n.channel, n.target, n.state FROM notification n ORDER BY n.id"
        )

    def drain(self, until, timeout_s=10.0):
        """Run the dispatcher's loop until ``until()`` holds (or fail after timeout_s)."""
        drain_dispatcher(self.dispatcher, until, self.outbox, timeout_s)


def _signed_by(secret, request):
    headers, body, received = request
    verify(secret, headers["Phasekit-Timestamp"], headers["Phasekit-Signature"], body, now=received)
    return True


def test_each_tenant_hears_its_own_alarms_and_the_other_falls_back(server_config, smtp):
    port, sink = smtp
    with Receiver() as server_hook, Receiver() as a_hook, Receiver() as a_duty:
        notify = NotifySettings(
            webhook_secret=SECRET,
            tenant_secrets={"utility-a": TENANT_SECRET},
            email_host="127.0.0.1",
            email_port=port,
            email_security="none",
            email_from="phasekit@example.org",
            email_to=["ops@example.org"],
            email_escalate_to=["duty@example.org"],
            email_timeout_s=3,
            webhook_url=server_hook.url,
            webhook_timeout_s=2,
            escalate_after_s=600,
            tenants={
                "utility-a": {
                    "email_to": ["control@utility-a.example"],
                    "webhook_url": a_hook.url,
                    "webhook_escalate_url": a_duty.url,
                    "webhook_secret_file": "a.secret",
                }
            },
        )
        w = Sites(server_config("sqlite"), notify)
        w.relay_fault("s1", 10)
        w.relay_fault("s2", 11)
        assert sorted(r[:4] for r in w.outbox()) == [
            ("utility-a", "raised", "email", "to"),
            ("utility-a", "raised", "webhook", "url"),
            ("utility-b", "raised", "email", "to"),
            ("utility-b", "raised", "webhook", "url"),
        ]
        w.drain(lambda: all(r[4] == "sent" for r in w.outbox()))
        sent = sorted((m["to"], "s1/" in str(m["message"]["Subject"])) for m in sink.messages)
        assert sent == [(["control@utility-a.example"], True), (["ops@example.org"], False)], sent
        # utility-a's webhook: its own receiver, signed with its own secret (not the server's).
        ((a_req),) = a_hook.requests
        assert b'"tenant_id":"utility-a"' in a_req[1] and _signed_by(TENANT_SECRET, a_req)
        with pytest.raises(SignatureError):
            _signed_by(SECRET, a_req)
        # utility-b has no table: the server-wide receiver and secret.
        ((b_req),) = server_hook.requests
        assert b'"tenant_id":"utility-b"' in b_req[1] and _signed_by(SECRET, b_req)

        # Escalation: utility-a sets webhook_escalate_url but not email_escalate_to, so its e-mail escalation
        # falls back to the server-wide second list; utility-b's goes to the server-wide lists entirely.
        w.at(11 + 600)
        w.engine.sweep()
        escalated = sorted(r[:4] for r in w.outbox() if r[1] == "escalated")
        assert escalated == [
            ("utility-a", "escalated", "email", "escalate_to"),
            ("utility-a", "escalated", "webhook", "escalate_url"),
            ("utility-b", "escalated", "email", "escalate_to"),
            ("utility-b", "escalated", "webhook", "url"),
        ]
        w.drain(lambda: all(r[4] == "sent" for r in w.outbox()))
        ((duty_req),) = a_duty.requests
        assert b'"transition":"escalated"' in duty_req[1] and _signed_by(TENANT_SECRET, duty_req)
        assert len(a_hook.requests) == 1 and len(server_hook.requests) == 2
        assert _signed_by(SECRET, server_hook.requests[1]) and b'"tenant_id":"utility-b"' in server_hook.requests[1][1]
        assert [m["to"] for m in sink.messages[2:]] == [["duty@example.org"], ["duty@example.org"]]


def test_tenant_tables_load_from_the_file_with_their_secrets(tmp_path):
    (tmp_path / "hook.secret").write_text("server-secret\n")
    (tmp_path / "a.secret").write_text("tenant-a-secret\nignored\n")
    p = tmp_path / "server.toml"
    p.write_text(
        HEAD + '[notify]\nemail_host = "smtp.example.org"\nemail_from = "p@example.org"\nemail_to = ["o@example.org"]\n'
        'webhook_url = "https://hooks.example.org/x"\nwebhook_secret_file = "hook.secret"\n\n'
        '[notify.tenants."utility-a"]\nemail_to = ["a@utility-a.example"]\n'
        'webhook_url = "https://a.example/hook"\nwebhook_secret_file = "a.secret"\n\n'
        "[notify.tenants.utility-c]\nemail_escalate_to = []\n"
    )
    cfg = server_config_module.load(p)
    n = NotifySettings.from_table(
        cfg.table("notify"),
        secret=lambda k: cfg.secret("notify", k),
        resolve=lambda q: str(cfg.resolve(q)),
        tenant_secret=cfg.tenant_secret,
    )
    assert n.webhook_secret == b"server-secret" and n.tenant_secrets == {"utility-a": b"tenant-a-secret"}
    a, b, c = n.recipients("utility-a"), n.recipients("utility-b"), n.recipients("utility-c")
    assert a.email_to == ["a@utility-a.example"] and a.webhook_url == "https://a.example/hook"
    assert b.email_to == ["o@example.org"] and b.webhook_url == "https://hooks.example.org/x" and not b.own
    assert c.email_to == ["o@example.org"] and c.email_escalate_to == [] and c.own == {"email_escalate_to"}
    d = Dispatcher(None, n)
    assert d.targets({"tenant_id": "utility-a"}, "raised") == [("email", "to"), ("webhook", "url")]
    assert d._webhook("utility-a", "url")[0] is d.tenant_webhooks["utility-a"]
    assert d._webhook("utility-b", "url")[0] is d.webhook


@pytest.mark.parametrize(
    "body,where,what",
    [
        (
            '[notify.tenants."utility-a"]\nemail_too = ["a@b.c"]\n',
            ':5: [notify.tenants."utility-a"] email_too',
            "known:",
        ),
        (
            '[notify.tenants."utility-a"]\nemail_to = ["a b@c"]\n',
            ':5: [notify.tenants."utility-a"] email_to = ',
            "not one e-mail address",
        ),
        ('[notify.tenants."utility-a"]\nemail_to = "a@b.c"\n', ":5:", "expected list, got str"),
        ('[notify.tenants."utility-a"]\nwebhook_url = "ftp://x"\n', ":5:", "http"),
        (
            '[notify.tenants."utility-a"]\n\nwebhook_url = "https://a.example/h"\n',
            ':6: [notify.tenants."utility-a"] webhook_url: ',
            "its own secret",
        ),
        ('[notify.tenants.utility-a]\nwebhook_secret_file = "a.secret"\n', ":5:", "signs nothing"),
        ('[notify.tenants."a b"]\nemail_to = []\n', ":4:", "tenant id 'a b'"),
        ("[notify.tenants]\nutility-a = 5\n", ":5:", "expected a table of recipients"),
        ('[notify]\ntenants = { "utility-a" = { webhook_url = 1 } }\n', ":5:", "expected str, got int"),
        ('[notify.tenants."utility-a"]\nemail_to = ["a@b.c"]\n', ":5:", "relay ([notify] email_host)"),
    ],
)
def test_bad_tenant_tables_name_file_line_and_key(tmp_path, body, where, what):
    p = tmp_path / "server.toml"
    p.write_text(HEAD + "\n" + body)
    with pytest.raises(ConfigError) as e:
        server_config_module.load(p)
    msg = str(e.value)
    assert str(p) in msg and where in msg and what in msg, msg
