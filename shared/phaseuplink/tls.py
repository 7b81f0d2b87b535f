"""The paho-mqtt client both ends of the uplink build: MQTT 3.1.1 over TLS, the broker's certificate verified.

The transformer Pi (``phasegate.uplink``) and the server's ingest
(``phaseserver.ingest``) connect to the same broker the same way; this is
that way, once. The one thing to know: with TLS on, the broker's certificate
is always verified against ``ca`` (``CERT_REQUIRED``, host name checked,
``PROTOCOL_TLS_CLIENT``: the highest version both ends offer), and a
client certificate (``cert`` + ``key``) is how the broker knows who connects
(Mosquitto ``use_identity_as_username``, docs/uplink.md section 2). TLS off is
for a trusted lab network only.

Use::

    problem = settings_problem(tls, ca, cert, key)   # None, or what is wrong: check at configuration time
    client = mqtt_client("phasegate-s1-t1", ca=ca, cert=cert, key=key, clean_session=True)
    client.will_set(...); client.on_connect = ...    # the caller's own part

A client that must bound what the broker may deliver to it (the Pi, whose
subscription is open to whoever may publish operator commands) gives
``max_packet_size``: it then speaks MQTT 5 and announces that Maximum Packet
Size in its CONNECT (MQTT 5.0 section 3.1.2.11.4: the server must not send it
a larger packet; Mosquitto drops such a message for that client), so an
oversized payload is never read off the socket at all. ``connect_async``
connects either kind.

Public: ``mqtt_client``, ``connect_async``, ``settings_problem``, ``TLSSettingsError``.
"""

import os
import ssl

import paho.mqtt.client as mqtt

from phaseuplink.errors import TLSSettingsError

__all__ = ("mqtt_client", "connect_async", "settings_problem", "TLSSettingsError")

# A certificate or key file: a path as the settings give it, or None for none.
_PathSetting = str | os.PathLike[str] | None


def settings_problem(tls: bool, ca: _PathSetting, cert: _PathSetting, key: _PathSetting) -> str | None:
    """What is wrong with these TLS settings, in words for an error message, or None when they can connect."""
    if tls and not ca:
        return "TLS needs a CA file ('ca'); turn TLS off only on a trusted lab network"
    if (cert is None) != (key is None):
        return "a client certificate needs both 'cert' and 'key'"
    return None


def mqtt_client(
    client_id: str,
    ca: _PathSetting = None,
    cert: _PathSetting = None,
    key: _PathSetting = None,
    tls: bool = True,
    clean_session: bool = True,
    manual_ack: bool = False,
    reconnect_min_s: float = 1,
    reconnect_max_s: float = 30,
    max_packet_size: int | None = None,
) -> mqtt.Client:
    """A paho-mqtt 2.x ``Client`` (callback API 2, MQTT 3.1.1) with TLS set up and the reconnect back-off.

    ``clean_session``: False for a subscriber whose broker must keep its
    messages while it is away (the server); ``manual_ack``: acknowledge a
    message only once it is committed. Raises ``TLSSettingsError`` for the
    settings ``settings_problem`` refuses.
    """
    problem = settings_problem(tls, ca, cert, key)
    if problem:
        raise TLSSettingsError(problem)
    if max_packet_size is None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
            manual_ack=manual_ack,
        )
    else:
        if not 64 <= max_packet_size <= 268435455:
            raise TLSSettingsError("max_packet_size %d outside 64..268435455 (MQTT 5)" % max_packet_size)
        # MQTT 5: clean start and the packet size limit go with the CONNECT (connect_async).
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
        )
        client.user_data_set({"clean_start": clean_session, "max_packet_size": max_packet_size})
    if tls:
        client.tls_set(
            ca_certs=str(ca),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
    return client


def connect_async(client: mqtt.Client, host: str, port: int, keepalive: int) -> None:
    """``client.connect_async`` with what a client of ``mqtt_client`` needs in its CONNECT (MQTT 3.1.1 or 5)."""
    options = client.user_data_get()
    if client.protocol != mqtt.MQTTv5 or not isinstance(options, dict):
        client.connect_async(host, port, keepalive)
        return
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = options["max_packet_size"]
    client.connect_async(host, port, keepalive, clean_start=options["clean_start"], properties=props)
