"""Notifications of alarm transitions: e-mail over SMTP and signed webhooks, from a durable outbox.

- ``message``: what a notification says (``Notice``: subject, text, JSON body).
- ``email``: ``EmailChannel`` (smtplib, STARTTLS or TLS, optional login).
- ``webhook``: ``WebhookChannel`` (HTTP POST signed with HMAC-SHA256 over
  timestamp and body), ``sign`` and ``verify`` for receivers, ``backoff``.
- ``dispatch``: ``Dispatcher``, the outbox worker: retries with back-off and
  jitter, a delivery log, a bounded backlog that is counted and alarmed.
- ``settings``: the ``[notify]``, ``[notify.email]`` and ``[notify.webhook]`` tables.

The one thing to know: the alarm engine only writes outbox rows (in the
transaction that changes the alarm, keyed by alarm, transition, channel and
target, so one episode's transition is notified once); sending happens later
in the dispatcher's own tasks and threads, so a notifier that is down never
blocks ingest or the engine.
"""

from phaseserver.errors import ServerError

__all__ = ("NotifyError",)


class NotifyError(ServerError):
    """A notification setting is unusable, or a webhook signature does not verify; the message says which."""
