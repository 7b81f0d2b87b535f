"""Ingest: the uplink's batches from a broker into the store, each record once.

- ``ingest.core``: sans-IO; ``(topic, payload, received_s)`` in, an ``Outcome``
  out; caps, dead letters, counters. Every source feeds it.
- ``ingest.pump``: the bounded queue and the worker thread between a source
  and the core: commits messages in groups, acknowledges after the commit.
- ``ingest.mqtt``: paho-mqtt, MQTT 5 shared subscription, persistent session,
  manual acknowledgement.
- ``ingest.amqp``: pika, a RabbitMQ quorum queue bound to ``amq.topic``.

The one thing to know: a message is acknowledged to its broker only after
the transaction that stored (or dead-lettered) it committed.
"""

__all__ = ("core", "pump", "mqtt", "amqp")
