"""Signed webhooks: an alarm transition POSTed as JSON, signed with HMAC-SHA256 over timestamp and body.

Each delivery carries three headers (no ``X-`` prefix, RFC 6648):

- ``Phasekit-Delivery``: the outbox row's id; a retry of the same
  notification carries the same id, so a receiver drops a second copy (a
  retry after a timeout can arrive twice: delivery is at least once);
- ``Phasekit-Timestamp``: Unix seconds (wall clock) when this attempt was signed;
- ``Phasekit-Signature``: ``v1=`` + hex HMAC-SHA256 (RFC 2104, FIPS 180-4)
  keyed with the shared secret over ``timestamp + "." + body`` (the raw body
  bytes, before any JSON parsing).

A receiver verifies with ``verify(secret, headers..., body, now)``: it
recomputes the MAC, compares in constant time (``hmac.compare_digest``) and
refuses a timestamp more than ``tolerance_s`` (300 s) from its own clock, so
a captured request cannot be replayed later; docs/server.md shows the same
in a few lines of any language. The one thing to know: a 2xx answer is
success; 408, 425, 429, 5xx and network errors are retried with exponential
back-off and jitter (``backoff``), a ``Retry-After`` in seconds is honoured
up to the back-off cap; any other answer (a 4xx, a redirect) is final.
"""

import hashlib
import hmac
import http.client
import random
import ssl
import time
import urllib.parse
from typing import Callable, NamedTuple

from phasecore.errors import quote
from phaseserver.notify import NotifyError
from phaseserver.notify.message import Notice

__all__ = (
    "sign",
    "verify",
    "backoff",
    "Outcome",
    "WebhookChannel",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DELIVERY_HEADER",
    "SignatureError",
)

SIGNATURE_HEADER = "Phasekit-Signature"
TIMESTAMP_HEADER = "Phasekit-Timestamp"
DELIVERY_HEADER = "Phasekit-Delivery"
_SCHEME = "v1="
_RETRY_STATUS = (408, 425, 429)
_ANSWER_MAX = 2048  # bytes of a receiver's answer read and logged, at most
_USER_AGENT = "phaseserver-webhook/1"


class SignatureError(NotifyError):
    """A webhook request whose signature or timestamp does not verify."""


class Outcome(NamedTuple):
    """One delivery attempt: ``ok``; else whether to ``retry`` (and not before ``retry_after_s``)."""

    ok: bool
    retry: bool
    status: str
    detail: str
    retry_after_s: float | None = None


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Phasekit-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, b"%d." % int(timestamp) + body, hashlib.sha256).hexdigest()
    return _SCHEME + mac


def verify(secret: bytes, timestamp: str, signature: str, body: bytes, now: float, tolerance_s: float = 300) -> None:
    """Check a received webhook; raises ``SignatureError`` saying what failed, returns None when it verifies."""
    ts = (timestamp or "").strip()
    if not ts.isdigit() or len(ts) > 12:
        raise SignatureError("timestamp header %s is not Unix seconds" % (quote(ts[:20]),))
    if abs(now - int(ts)) > tolerance_s:
        raise SignatureError("timestamp %s is more than %g s from now" % (ts, tolerance_s))
    want = sign(secret, int(ts), body)
    got = (signature or "").strip()
    if not hmac.compare_digest(want.encode(), got.encode()[:200]):
        raise SignatureError("signature does not match the body and timestamp")


def backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Wait before retry ``attempt`` (1, 2, ...): base x 2^(attempt-1), capped, times a jitter in [0.5, 1).

    Exponential back-off spreads a receiver's recovery load; the jitter keeps
    many servers (or many alarms) from retrying in step ("equal jitter").
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    raw = min(cap_s, base_s * (2.0 ** min(attempt - 1, 60)))
    return raw * (0.5 + 0.5 * rng.random())


class WebhookChannel:
    """``WebhookChannel(url, secret, timeout_s=10)``; ``send(notice)`` POSTs once (blocking: run it in a thread)."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotifyError("webhook url %s must be http:// or https:// with a host" % (quote(url[:80]),))
        if not secret:
            raise NotifyError("webhook secret is empty")
        self.url = url
        self._parts = parts
        self._secret = bytes(secret)
        self.timeout_s = float(timeout_s)
        self._context = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        self._wall = wall

    def send(self, notice: Notice, url: str | None = None) -> Outcome:
        """POST ``notice`` to ``url`` (default: the channel's); never raises for a failure of the receiver."""
        parts = urllib.parse.urlsplit(url) if url else self._parts
        now = int(self._wall())
        body = notice.body(now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            DELIVERY_HEADER: str(notice.id),
            TIMESTAMP_HEADER: str(now),
            SIGNATURE_HEADER: sign(self._secret, now, body),
        }
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn: http.client.HTTPConnection
        try:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=self.timeout_s, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout_s)
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = resp.read(_ANSWER_MAX)
                status = resp.status
                retry_after = _retry_after(resp.getheader("Retry-After"))
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            return Outcome(False, True, "network", _short("%s: %s" % (type(e).__name__, e)))
        detail = _short(answer.decode("utf-8", "replace"))
        if 200 <= status < 300:
            return Outcome(True, False, str(status), detail)
        retry = status in _RETRY_STATUS or status >= 500
        return Outcome(False, retry, str(status), detail, retry_after if retry else None)


def _retry_after(value: str | None) -> float | None:
    # RFC 9110 10.2.3: delay-seconds or an HTTP-date; only the seconds form is honoured.
    if value and value.strip().isdigit() and len(value.strip()) <= 9:
        return float(value.strip())
    return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
