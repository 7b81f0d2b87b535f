"""Signed webhooks against a real local HTTP server: the signature a receiver verifies (checked with an
independent HMAC from the cryptography package), answers that are retried or final, back-off with jitter."""

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac

from phasekit.testing.broker import free_port
from phaseserver.notify import NotifyError
from phaseserver.notify.message import Notice
from phaseserver.notify.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    WebhookChannel,
    backoff,
    sign,
    verify,
)

SECRET = b"0123456789abcdef0123456789abcdef"
ALARM = {"id": 7, "type": "pi_offline", "object": "s1/t1", "severity": 4, "raised_s": 1_700_000_000}


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers from a script (status codes, delays) and keeps requests."""

    def __init__(self, script=(), delay_s=0.0):
        self.script = list(script)
        self.delay_s = delay_s
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body, time.time()))
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                status, extra = outer.script.pop(0) if outer.script else (200, {})
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                answer = b"answer %d" % status
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up (timeout test) breaks the pipe: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook?tenant=t1" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _independent_mac(secret, ts, body):
    h = c_hmac.HMAC(secret, hashes.SHA256())
    h.update(b"%d." % ts + body)
    return "v1=" + h.finalize().hex()


def test_delivery_is_signed_and_the_receiver_verifies_it():
    with Receiver() as r:
        out = WebhookChannel(r.url, SECRET, timeout_s=5).send(Notice(99, "raised", "webhook", "url", ALARM))
    assert out.ok and out.status == "200", out
    ((headers, body, received),) = r.requests
    ts = int(headers[TIMESTAMP_HEADER])
    assert headers[SIGNATURE_HEADER] == _independent_mac(SECRET, ts, body)
    assert headers[DELIVERY_HEADER] == "99"
    assert headers["Content-Type"] == "application/json"
    verify(SECRET, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], body, now=received)
    doc = json.loads(body)
    assert doc["alarm"] == ALARM and doc["transition"] == "raised" and doc["delivery"] == 99


def test_verify_refuses_tampering_replay_and_garbage():
    body = b'{"a":1}'
    sig = sign(SECRET, 1000, body)
    assert sig == _independent_mac(SECRET, 1000, body)
    verify(SECRET, "1000", sig, body, now=1100)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, "1000", sig, body + b" ", now=1000)
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"another secret", "1000", sig, body, now=1000)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, "1001", sig, body, now=1000)  # the timestamp is covered too
    with pytest.raises(SignatureError, match="more than 300 s"):
        verify(SECRET, "1000", sig, body, now=1000 + 301)
    with pytest.raises(SignatureError, match="not Unix seconds"):
        verify(SECRET, "-5", sig, body, now=1000)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, "1000", "v1=" + "0" * 5000, body, now=1000)
    assert issubclass(SignatureError, NotifyError)


@pytest.mark.parametrize(
    "status,retry",
    [(503, True), (500, True), (429, True), (408, True), (400, False), (401, False), (404, False), (301, False)],
)
def test_answers_are_retried_or_final(status, retry):
    with Receiver([(status, {"Retry-After": "7"})]) as r:
        out = WebhookChannel(r.url, SECRET, timeout_s=5).send(Notice(1, "cleared", "webhook", "url", ALARM))
    assert not out.ok and out.retry is retry and out.status == str(status), out
    assert out.retry_after_s == (7.0 if retry else None)
    assert ("answer %d" % status) in out.detail


def test_network_failures_are_retried():
    refused = WebhookChannel("http://127.0.0.1:%d/" % free_port(), SECRET, timeout_s=2).send(
        Notice(1, "raised", "webhook", "url", ALARM)
    )
    assert not refused.ok and refused.retry and refused.status == "network", refused
    with Receiver(delay_s=1.0) as r:
        slow = WebhookChannel(r.url, SECRET, timeout_s=0.2).send(Notice(1, "raised", "webhook", "url", ALARM))
    assert not slow.ok and slow.retry and "timed out" in slow.detail, slow


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(1)
    waits = [[backoff(a, 2.0, 60.0, rng) for a in range(1, 9)] for _ in range(200)]
    for run in waits:
        for a, w in enumerate(run, 1):
            raw = min(60.0, 2.0 * 2 ** (a - 1))
            assert raw * 0.5 <= w < raw
    firsts = {round(run[0], 6) for run in waits}
    assert len(firsts) > 150  # jitter: retries of many notifications do not fall in step
    with pytest.raises(ValueError):
        backoff(0, 1, 2, rng)


def test_bad_settings_are_refused():
    with pytest.raises(NotifyError, match="http"):
        WebhookChannel("ftp://example.org/", SECRET)
    with pytest.raises(NotifyError, match="secret"):
        WebhookChannel("https://example.org/", b"")
