"""What one notification says: an alarm's transition rendered as a subject, a text and a JSON body.

``Notice`` is built by the dispatcher from an outbox row and the alarm row it
names; both channels render from it, so an e-mail and a webhook of the same
transition say the same thing. The one thing to know: times in the alarm are
site time (the server's injected clock), the ``sent_s`` a receiver checks a
signature's freshness against is wall time.
"""

import json
import time
from typing import Any

from phasecore.errors import quote
from phaseserver.alarms.rules import severity_name

__all__ = ("Notice", "TRANSITIONS")

TRANSITIONS = ("raised", "escalated", "cleared")
_TEXT_MAX = 200  # a comment or detail value quoted in a message is cut here


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _TEXT_MAX else text[:_TEXT_MAX] + "..."


def _iso(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


class Notice:
    """One transition of one alarm for one channel and target (``id`` is the outbox row's)."""

    def __init__(
        self,
        id: int,
        transition: str,
        channel: str,
        target: str,
        alarm: dict[str, Any],
        base_url: str = "",
    ) -> None:
        if transition not in TRANSITIONS:
            raise ValueError("unknown transition %s" % (quote(transition),))
        self.id = int(id)
        self.transition = transition
        self.channel = channel
        self.target = target
        self.alarm = dict(alarm)
        self.base_url = base_url.rstrip("/")

    @property
    def subject(self) -> str:
        a = self.alarm
        word = {"raised": "ALARM", "escalated": "ESCALATED (not acknowledged)", "cleared": "cleared"}[self.transition]
        return "[phasekit] %s %s %s at %s" % (word, severity_name(int(a["severity"])), a["type"], a["object"])

    def text(self) -> str:
        """The plain-text body of an e-mail."""
        a = self.alarm
        lines = [
            self.subject,
            "",
            "alarm       %s (episode %s)" % (a["type"], a["id"]),
            "object      %s" % a["object"],
            "severity    %s" % severity_name(int(a["severity"])),
            "since       %s" % _iso(a.get("since_s")),
            "raised      %s" % _iso(a.get("raised_s")),
        ]
        if a.get("value") is not None:
            lines.append("value       %s" % _cut(a["value"]))
        if a.get("acked_s") is not None:
            lines.append(
                "ack         %s by %s: %s" % (_iso(a["acked_s"]), a.get("acked_by"), _cut(a.get("ack_comment")))
            )
        if a.get("cleared_s") is not None:
            lines.append(
                "cleared     %s by %s: %s" % (_iso(a["cleared_s"]), a.get("cleared_by"), _cut(a.get("clear_comment")))
            )
        for k, v in sorted((a.get("detail") or {}).items()):
            lines.append("%-11s %s" % (_cut(k)[:11], _cut(v)))
        if self.base_url:
            lines += ["", "%s/#/alarms/%s" % (self.base_url, a["id"])]
        return "\n".join(lines) + "\n"

    def body(self, sent_s: float) -> bytes:
        """The webhook's JSON body (sorted keys, no spaces: the bytes the signature covers)."""
        doc = {
            "delivery": self.id,
            "transition": self.transition,
            "sent_s": int(sent_s),
            "alarm": self.alarm,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()

    def message_id(self, domain: str) -> str:
        """An RFC 5322 Message-ID per alarm and transition, so a mail client threads an episode."""
        return "<phasekit-alarm-%s-%s@%s>" % (self.alarm["id"], self.transition, domain)
