"""The uplink's MQTT client set-up against a real Mosquitto with mutual TLS (phasekit.testing.broker.LocalBroker)."""

import ssl
import threading

import pytest

from phasekit.testing.broker import LocalBroker, make_tls_files
from phaseuplink.errors import TLSSettingsError, UplinkError
from phaseuplink.tls import mqtt_client, settings_problem


def test_settings_that_cannot_make_a_verified_connection_are_named():
    assert settings_problem(True, "ca.crt", "c.crt", "c.key") is None
    assert settings_problem(True, "ca.crt", None, None) is None
    assert settings_problem(False, None, None, None) is None
    assert "TLS needs a CA file" in settings_problem(True, None, None, None)
    assert "needs both 'cert' and 'key'" in settings_problem(True, "ca.crt", "c.crt", None)
    assert "needs both 'cert' and 'key'" in settings_problem(False, None, None, "c.key")
    with pytest.raises(TLSSettingsError, match="TLS needs a CA file"):
        mqtt_client("x", tls=True)
    assert issubclass(TLSSettingsError, UplinkError) and issubclass(TLSSettingsError, ValueError)


def _connect(client, broker, timeout=10.0):
    """Connect, wait for CONNACK; returns the reason code."""
    done = threading.Event()
    got = []

    def on_connect(client, userdata, flags, reason_code, properties):
        got.append(reason_code)
        done.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port, 30)
    client.loop_start()
    try:
        assert done.wait(timeout), "no CONNACK within %.0f s" % timeout
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_a_client_with_the_sites_certificates_connects_and_one_with_another_ca_is_refused(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        t = broker.tls
        ok = mqtt_client("phasegate-s1-t1", ca=t.ca, cert=t.client_cert, key=t.client_key)
        assert not _connect(ok, broker).is_failure
        # Another CA: the broker's certificate does not verify, the handshake fails before MQTT.
        other = make_tls_files(tmp_path / "other")
        stranger = mqtt_client("x", ca=other.ca, cert=other.client_cert, key=other.client_key)
        with pytest.raises(ssl.SSLCertVerificationError):
            stranger.connect(broker.host, broker.port, 30)
