"""E-mail notifications against a real SMTP server (aiosmtpd in-process): clear, STARTTLS + login, implicit TLS,
refusals that are retried (4xx) or final (5xx, bad login, no STARTTLS offered)."""

import email
import email.policy
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from phasekit.testing.broker import free_port, make_tls_files
from phaseserver.notify import NotifyError
from phaseserver.notify.email import EmailChannel
from phaseserver.notify.message import Notice

ALARM = {
    "id": 41,
    "type": "node_silent",
    "object": "s1/t1/17",
    "severity": 3,
    "since_s": 1_700_000_000,
    "raised_s": 1_700_000_130,
    "value": 130.0,
    "detail": {"gap_s": 120.0, "mode": "raw"},
}


class Sink:
    """An aiosmtpd handler that keeps what it accepted and can refuse recipients."""

    def __init__(self):
        self.messages = []
        self.rcpt_reply = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "message": email.message_from_bytes(envelope.content, policy=email.policy.default),
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": bool(session.authenticated),
            }
        )
        return "250 Message accepted"


def _auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alarms" and auth_data.password == b"s3cret"
    # handled=False: aiosmtpd answers 535 itself (its default, True, means "the authenticator replied").
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_files(tmp_path):
    return make_tls_files(tmp_path / "tls")


def _server_context(files):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
    return ctx


def _start(handler, **kwargs):
    c = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
    c.start()
    return c


def test_plain_delivery_has_the_alarm_and_threads_the_episode():
    sink = Sink()
    c = _start(sink)
    try:
        ch = EmailChannel("127.0.0.1", "phasekit@example.org", port=c.port, security="none", timeout_s=5)
        raised = ch.send(Notice(1, "raised", "email", "to", ALARM), ["ops@example.org", "lead@example.org"])
        cleared = ch.send(
            Notice(2, "cleared", "email", "to", dict(ALARM, cleared_s=1_700_000_200)), ["ops@example.org"]
        )
    finally:
        c.stop()
    assert raised.ok and cleared.ok, (raised, cleared)
    assert [m["to"] for m in sink.messages] == [["ops@example.org", "lead@example.org"], ["ops@example.org"]]
    first, second = (m["message"] for m in sink.messages)
    assert first["Subject"] == "[phasekit] ALARM major node_silent at s1/t1/17"
    assert first["Message-ID"] == "<phasekit-alarm-41-raised@example.org>"
    assert second["In-Reply-To"] == first["Message-ID"] == second["References"]
    assert "cleared" in second["Subject"]
    body = first.get_content()
    assert "s1/t1/17" in body and "gap_s" in body and "2023-11-14 22:13:20 UTC" in body
    assert first["Auto-Submitted"] == "auto-generated"


def test_starttls_and_login_against_a_server_that_requires_both(tls_files):
    sink = Sink()
    c = _start(
        sink,
        tls_context=_server_context(tls_files),
        require_starttls=True,
        authenticator=_auth,
        auth_required=True,
    )
    try:
        good = EmailChannel(
            "localhost",
            "phasekit@example.org",
            port=c.port,
            security="starttls",
            username="alarms",
            password="s3cret",
            ca_file=str(tls_files.ca),
            timeout_s=5,
        )
        ok = good.send(Notice(1, "raised", "email", "to", ALARM), ["ops@example.org"])
        bad = EmailChannel(
            "localhost",
            "phasekit@example.org",
            port=c.port,
            username="alarms",
            password="wrong",
            ca_file=str(tls_files.ca),
            timeout_s=5,
        ).send(Notice(2, "raised", "email", "to", ALARM), ["ops@example.org"])
        # Without our CA the server's certificate is not trusted: a network-level failure, retried.
        untrusted = EmailChannel(
            "localhost", "phasekit@example.org", port=c.port, username="alarms", password="s3cret", timeout_s=5
        ).send(Notice(3, "raised", "email", "to", ALARM), ["ops@example.org"])
    finally:
        c.stop()
    assert ok.ok, ok
    assert len(sink.messages) == 1 and sink.messages[0]["tls"] and sink.messages[0]["authenticated"]
    assert not bad.ok and not bad.retry and bad.status == "535", bad
    assert not untrusted.ok and untrusted.retry and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail, untrusted


def test_implicit_tls(tls_files):
    sink = Sink()
    c = _start(sink, ssl_context=_server_context(tls_files))
    try:
        ch = EmailChannel(
            "localhost", "phasekit@example.org", port=c.port, security="tls", ca_file=str(tls_files.ca), timeout_s=5
        )
        out = ch.send(Notice(1, "escalated", "email", "escalate_to", ALARM), ["duty@example.org"])
    finally:
        c.stop()
    assert out.ok, out
    assert sink.messages[0]["tls"] and "ESCALATED" in sink.messages[0]["message"]["Subject"]


def test_starttls_required_but_not_offered_never_falls_back_to_clear_text():
    sink = Sink()
    c = _start(sink)  # no tls_context: the server offers no STARTTLS
    try:
        out = EmailChannel("127.0.0.1", "phasekit@example.org", port=c.port, timeout_s=5).send(
            Notice(1, "raised", "email", "to", ALARM), ["ops@example.org"]
        )
    finally:
        c.stop()
    assert not out.ok and not out.retry and out.status == "unsupported", out
    assert sink.messages == []


@pytest.mark.parametrize("reply,retry", [("451 4.3.0 try later", True), ("550 5.1.1 no such user", False)])
def test_refused_recipients_transient_or_final(reply, retry):
    sink = Sink()
    sink.rcpt_reply = reply
    c = _start(sink)
    try:
        out = EmailChannel("127.0.0.1", "phasekit@example.org", port=c.port, security="none", timeout_s=5).send(
            Notice(1, "raised", "email", "to", ALARM), ["ops@example.org"]
        )
    finally:
        c.stop()
    assert not out.ok and out.retry is retry and out.status == reply[:3], out


def test_unreachable_server_is_retried_and_bad_settings_are_refused():
    out = EmailChannel("127.0.0.1", "phasekit@example.org", port=free_port(), security="none", timeout_s=2).send(
        Notice(1, "raised", "email", "to", ALARM), ["ops@example.org"]
    )
    assert not out.ok and out.retry and out.status == "network"
    with pytest.raises(NotifyError, match="in clear"):
        EmailChannel("h", "a@b", security="none", username="u", password="p")
    with pytest.raises(NotifyError, match="security"):
        EmailChannel("h", "a@b", security="ssl")
    with pytest.raises(NotifyError, match="not an address"):
        EmailChannel("h", "nobody")
