"""An operator (and a forger) of a simulated site: sealed commands published to the Pi's command topic.

``SiteOperator`` does what ``phasekit operator send`` does, in site time: it
seals a command with its operator key (``phasegate.operator.seal_command``,
its own persistent counter) for one site, transformer and node, with a
deadline in site time, and publishes it over MQTT/TLS with its certificate.
``forge`` publishes a command under the same operator id sealed with a key
that was never derived from the site key: what the holder of a stolen operator
certificate could send. The Pi's operator gate must refuse it (``bad_tag``)
and journal the refusal; nothing may move.

Public: ``SiteOperator``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from phasecore import msg
from phasecore.replay import SequenceCounter
from phasegate.operator import operator_key, seal_command
from phasegate.registry import CounterFile

if TYPE_CHECKING:
    from phasekit.pki import Issued
    from phasekit.site.clock import SiteClock
    from phasekit.site.services import SiteBroker

__all__ = ("SiteOperator",)


class SiteOperator:
    """``SiteOperator(site_key, operator_id, ...)``; ``send(node, op, phase=None)``, ``forge(node)``."""

    def __init__(
        self,
        site_key: bytes,
        operator_id: str,
        site: str,
        transformer: str,
        clock: SiteClock,
        broker: SiteBroker,
        cert: Issued,
        folder: Path,
        ttl_s: int = 840,
    ):
        self.key, self.base_iv = operator_key(site_key, operator_id)
        self.operator_id = operator_id
        self.site, self.transformer = site, transformer
        self.clock = clock
        self.broker = broker
        self.cert = cert
        self.ttl_s = ttl_s
        counter_file = CounterFile(folder / ("%s.seq" % operator_id))
        self.counter = SequenceCounter(counter_file.load, counter_file.save, block=16)
        self.sent: list[dict[str, Any]] = []

    def _fields(self, seq: int, op: int, phase: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"id": seq & 0xFFFFFFFF, "op": op, "deadline_s": int(self.clock.now()) + self.ttl_s}
        if phase is not None:
            fields["phase"] = phase
        return fields

    def send(self, node: int, op: int, phase: int | None = None) -> dict[str, Any]:
        """Seal and publish one genuine command; returns what was sent (op, node, seq, site time)."""
        seq = self.counter.next()
        fields = self._fields(seq, op, phase)
        payload = seal_command(self.key, self.base_iv, self.operator_id, seq, self.site, self.transformer, node, fields)
        return self._publish(payload, dict(fields, node=node, seq=seq, forged=False, cert=self.cert.record.cn))

    def forge(self, node: int, cert: Issued, phase: int = msg.PHASE_A) -> dict[str, Any]:
        """A MOVE under this operator's id sealed with a key nobody was given; published with ``cert``."""
        key, base_iv = secrets.token_bytes(32), secrets.token_bytes(13)
        seq = 1_000_000 + secrets.randbelow(1_000_000)
        fields = self._fields(seq, msg.OP_MOVE, phase)
        payload = seal_command(key, base_iv, self.operator_id, seq, self.site, self.transformer, node, fields)
        return self._publish(payload, dict(fields, node=node, seq=seq, forged=True, cert=cert.record.cn), cert)

    def _publish(self, payload: bytes, what: Mapping[str, Any], cert: Issued | None = None) -> dict[str, Any]:
        cert = cert or self.cert
        topic = "phasekit/%s/%s/command" % (self.site, self.transformer)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="site-operator-%d" % os.getpid())
        client.tls_set(ca_certs=str(cert.ca), certfile=str(cert.cert), keyfile=str(cert.key))
        out = dict(what, t_s=self.clock.now(), published=False)
        try:
            client.connect(self.broker.host, self.broker.port, 30)
        except OSError as e:
            out["error"] = str(e)
            self.sent.append(out)
            return out
        client.loop_start()
        try:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=10)
            out["published"] = info.is_published()
        except (RuntimeError, ValueError) as e:
            out["error"] = str(e)
        finally:
            client.disconnect()
            client.loop_stop()
        self.sent.append(out)
        return out
