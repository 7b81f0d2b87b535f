"""The MQTT topic tree of the phasekit uplink (docs/uplink.md section 2).

::

    phasekit/<site>/<transformer>/<kind>      a batch of records of that kind (phaseuplink.records.KINDS)
    phasekit/<site>/<transformer>/status      retained "online" / "offline" (the Pi's last will)
    phasekit/<site>/<transformer>/command     operator commands to the Pi (phasegate.operator)
    phasekit/<site>/<transformer>/relay/<gateway>   sealed frames a LoRa gateway relays to that Pi

The Pi publishes under ``prefix(site, transformer)``; the server subscribes
to ``SUBSCRIPTION`` and reads each message's topic with ``parse``. The one
thing to know: ``<site>`` and ``<transformer>`` are single topic levels, so an
id containing ``/``, ``+`` or ``#`` (or an empty one) is refused when the
topic is built (``TopicError``, a ValueError), never published to a topic
another transformer or a wildcard would match.

The relay topics are five levels deep, under the Pi's own tree: a LoRa gateway
(``phasegate.lora_gateway``) publishes the frames it heard from a Pi's nodes
to ``relay_topic(site, transformer, gateway)``, the Pi subscribes to
``relay_subscription(site, transformer)``, and the broker's ACL lets only that
Pi read them (``phasekit.pki``). ``parse`` refuses them: the server has nothing
to do with sealed frames (``is_relay`` tells them apart).

Public: ``topic_for``, ``prefix``, ``status_topic``, ``parse``, ``relay_topic``,
``relay_subscription``, ``is_relay``, ``ROOT``, ``STATUS_KIND``, ``COMMAND_KIND``,
``RELAY_KIND``, ``STATUS_ONLINE``, ``STATUS_OFFLINE``, ``SUBSCRIPTION``, ``TopicError``.
"""

from phasecore.errors import quote
from phaseuplink.errors import TopicError

__all__ = (
    "topic_for",
    "prefix",
    "status_topic",
    "parse",
    "relay_topic",
    "relay_subscription",
    "is_relay",
    "ROOT",
    "RELAY_KIND",
    "STATUS_KIND",
    "COMMAND_KIND",
    "STATUS_ONLINE",
    "STATUS_OFFLINE",
    "SUBSCRIPTION",
    "TopicError",
)

ROOT = "phasekit"
# The last topic level of what is not a record kind: the retained status and the operator commands.
STATUS_KIND = "status"
COMMAND_KIND = "command"
# The fourth level of the topics a LoRa gateway relays a Pi's frames to (a fifth names the gateway).
RELAY_KIND = "relay"
# Payloads of the retained status topic: online on connect, offline as the last will and on a clean stop.
STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"
# What the server subscribes to: every kind (and the status) of every transformer of every site.
SUBSCRIPTION = ROOT + "/+/+/#"
_QUOTE_MAX = 80


def topic_for(site: str, transformer: str, kind: str, node: int | None = None) -> str:
    """``phasekit/<site>/<transformer>/<kind>[/<node>]``; ids may not contain MQTT wildcards."""
    parts = [ROOT, site, transformer, kind] + ([str(node)] if node is not None else [])
    for p in parts:
        if not p or "/" in p or "+" in p or "#" in p:
            raise TopicError("topic level %s is empty or contains '/', '+' or '#'" % (quote(p),))
    return "/".join(parts)


def prefix(site: str, transformer: str) -> str:
    """``phasekit/<site>/<transformer>``: what every topic of one transformer starts with."""
    return topic_for(site, transformer, STATUS_KIND)[: -len(STATUS_KIND) - 1]


def status_topic(site: str, transformer: str) -> str:
    """``phasekit/<site>/<transformer>/status``."""
    return topic_for(site, transformer, STATUS_KIND)


def relay_topic(site: str, transformer: str, gateway: str) -> str:
    """``phasekit/<site>/<transformer>/relay/<gateway>``: frames ``gateway`` relays to that Pi."""
    prefix(site, transformer)  # checks both levels
    if not gateway or "/" in gateway or "+" in gateway or "#" in gateway:
        raise TopicError("topic level %s is empty or contains '/', '+' or '#'" % (quote(str(gateway)),))
    return "/".join((ROOT, site, transformer, RELAY_KIND, gateway))


def relay_subscription(site: str, transformer: str) -> str:
    """``phasekit/<site>/<transformer>/relay/+``: what the Pi subscribes to for its relayed frames."""
    return "/".join((ROOT, site, transformer, RELAY_KIND, "+"))


def is_relay(topic: str) -> bool:
    """Whether ``topic`` is a relay topic (``phasekit/<site>/<transformer>/relay/<gateway>``)."""
    if not isinstance(topic, str):
        return False
    parts = topic.split("/")
    return len(parts) == 5 and parts[0] == ROOT and parts[3] == RELAY_KIND and all(parts)


def parse(topic: str) -> tuple[str, str, str]:
    """``(site, transformer, kind)`` of a topic of the tree; ``TopicError`` for any other topic.

    ``kind`` is the last level as it is (a record kind, ``status``,
    ``command``, or a kind this side does not know: the caller decides);
    every level must be non-empty.
    """
    if not isinstance(topic, str):
        raise TopicError("topic must be a str, not %s" % type(topic).__name__)
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT or not all(parts):
        raise TopicError("topic %s is not %s/<site>/<transformer>/<kind>" % (quote(topic, _QUOTE_MAX), ROOT))
    return parts[1], parts[2], parts[3]
