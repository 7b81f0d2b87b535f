"""phaseuplink: the uplink contract between a transformer Pi (``phasegate``) and the server (``phaseserver``).

Both deployables import this package and neither imports the other, so the
server installs and runs without the gateway (``pip install phasekit[server]``).
The one thing to know: what goes over MQTT is specified here once, and
docs/uplink.md is its prose; change one, change the other.

- ``phaseuplink.records``: record kinds, the CBOR record and batch formats,
  ``encode_batch``/``decode_batch`` (the receiver's side treats bytes as hostile).
- ``phaseuplink.topics``: the topic tree ``phasekit/<site>/<transformer>/<kind>``,
  the status topic and its payloads, the server's subscription, ``parse``.
- ``phaseuplink.tls``: the paho-mqtt client both sides build (MQTT 3.1.1,
  TLS with the broker's certificate verified, optional client certificate).
- ``phaseuplink.sqlite``: the SQLite durability both stores rely on (WAL,
  ``synchronous=FULL``, busy timeout) for at-least-once delivery.
- ``phaseuplink.errors``: ``UplinkError`` (a ValueError) and its kinds.

CPython only (paho-mqtt, zlib, sqlite3); it depends on ``phasecore`` alone.
Only ``tls`` imports paho-mqtt, so the formats work without it. Import the
module you need; this package imports nothing.
"""
