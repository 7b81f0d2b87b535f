"""E-mail notifications over SMTP (RFC 5321): stdlib smtplib, STARTTLS (RFC 3207) or implicit TLS, optional login.

``EmailChannel(settings...).send(notice, recipients)`` sends one message and
returns an ``Outcome`` (``phaseserver.notify.webhook.Outcome``); it blocks, so
the dispatcher runs it in a worker thread with a timeout on every socket
operation. The one thing to know: with ``security = "starttls"`` a server
that does not offer STARTTLS is a failure, never a fall-back to clear text;
a 4xx reply or a broken connection is retried (RFC 5321 4.2.1: transient),
a 5xx reply or a refused login is final.

Each message has a Message-ID per alarm and transition and, after the
first, In-Reply-To and References naming the raise, so a mail client shows
an episode (raised, escalated, cleared) as one thread.
"""

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate
from typing import Callable

from phasecore.errors import quote
from phaseserver.notify import NotifyError
from phaseserver.notify.message import Notice
from phaseserver.notify.webhook import Outcome

__all__ = ("EmailChannel", "SECURITY")

SECURITY = ("starttls", "tls", "none")


class EmailChannel:
    """One SMTP relay; ``send(notice, recipients)`` delivers one message (blocking)."""

    name = "email"

    def __init__(
        self,
        host: str,
        sender: str,
        port: int = 587,
        security: str = "starttls",
        username: str = "",
        password: str = "",
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if security not in SECURITY:
            raise NotifyError("email security %s: expected one of %s" % (quote(security), ", ".join(SECURITY)))
        if username and security == "none":
            raise NotifyError("email login over a connection without TLS would send the password in clear")
        if "@" not in sender:
            raise NotifyError("email sender %s is not an address" % (quote(sender[:80]),))
        self.host, self.port = host, int(port)
        self.sender = sender
        self.security = security
        self.username, self._password = username, password
        self.timeout_s = float(timeout_s)
        self._context = ssl.create_default_context(cafile=ca_file) if security != "none" else None
        self._wall = wall
        self.domain = sender.rsplit("@", 1)[1]

    def build(self, notice: Notice, recipients: list[str]) -> EmailMessage:
        """The message for ``notice`` (headers threaded per episode)."""
        msg = EmailMessage()
        msg["Subject"] = notice.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Date"] = formatdate(self._wall(), usegmt=True)
        msg["Message-ID"] = notice.message_id(self.domain)
        if notice.transition != "raised":
            first = Notice(notice.id, "raised", notice.channel, notice.target, notice.alarm).message_id(self.domain)
            msg["In-Reply-To"] = first
            msg["References"] = first
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        msg.set_content(notice.text())
        return msg

    def send(self, notice: Notice, recipients: list[str]) -> Outcome:
        """Deliver ``notice`` to ``recipients``; never raises for a failure of the SMTP server."""
        if not recipients:
            return Outcome(False, False, "config", "no recipients")
        msg = self.build(notice, recipients)
        try:
            smtp = self._connect()
            try:
                if self.username:
                    self._login(smtp)
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=recipients)
                try:
                    smtp.quit()
                except smtplib.SMTPException:
                    pass  # the message is accepted; a failed QUIT changes nothing
            finally:
                smtp.close()
        except smtplib.SMTPRecipientsRefused as e:
            codes = [c for c, _ in e.recipients.values()]
            transient = all(400 <= c < 500 for c in codes)
            return Outcome(False, transient, str(max(codes)), "all recipients refused: %s" % _short(e.recipients))
        except smtplib.SMTPNotSupportedError as e:
            return Outcome(False, False, "unsupported", "server lacks what the settings require: %s" % _short(e))
        except smtplib.SMTPAuthenticationError as e:
            return Outcome(False, False, str(e.smtp_code), "login refused: %s" % _short(e.smtp_error))
        except smtplib.SMTPResponseException as e:
            transient = 400 <= e.smtp_code < 500
            return Outcome(False, transient, str(e.smtp_code), _short(e.smtp_error))
        except (smtplib.SMTPException, OSError) as e:
            return Outcome(False, True, "network", _short("%s: %s" % (type(e).__name__, e)))
        if refused:
            return Outcome(True, False, "250", "accepted, some recipients refused: %s" % _short(refused))
        return Outcome(True, False, "250", "accepted for %d recipient(s)" % len(recipients))

    def _login(self, smtp: smtplib.SMTP) -> None:
        # One mechanism, tried once (smtplib's login() would try each offered mechanism in turn, so a
        # wrong password costs several refusals and may lock the account): PLAIN (RFC 4616, safe
        # inside TLS), else LOGIN.
        smtp.ehlo_or_helo_if_needed()
        if not smtp.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("the server offers no AUTH")
        offered = smtp.esmtp_features["auth"].upper().split()
        smtp.user, smtp.password = self.username, self._password
        if "PLAIN" in offered:
            smtp.auth("PLAIN", smtp.auth_plain)
        elif "LOGIN" in offered:
            smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        else:
            raise smtplib.SMTPNotSupportedError("the server offers neither AUTH PLAIN nor LOGIN: %s" % offered)

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=self._context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=self._context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp


def _short(value: object, limit: int = 200) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
