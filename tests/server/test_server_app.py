"""The assembled server (``phaseserver.app``): maintenance runs by itself, readiness says what is missing."""

import time

from phasekit.testing.batches import encode, readings, topic
from phasekit.testing.server import ServerThread
from server_support import wait_until


def test_the_running_server_rolls_up_and_keeps_retention_by_itself(server_config):
    cfg = server_config("sqlite", storage={"rollup_interval_s": 1, "retention_interval_s": 60})
    with ServerThread(cfg) as st:
        server = st.server
        t0 = int(time.time()) - 2 * 86400
        t0 -= t0 % 3600
        out = server.ingest.handle(topic("s1", "t1", "reading"), encode(readings(10, t0, 120)))
        assert out.kind == "stored" and out.new == 1200
        assert wait_until(lambda: len(server.store.series(None, "s1", "t1", t0, t0 + 7200, 3600)) == 2, 10)
        assert server.metrics.readiness() == (True, "ok")  # no source: the store is all it needs
        text = server.metrics.render()
        assert "phaseserver_records_total 1200" in text
        assert wait_until(lambda: "phaseserver_rollup_hours_total 2" in server.metrics.render(), 5)


def test_readiness_names_a_source_that_is_not_connected(server_config, tmp_path):
    cfg = server_config(
        "sqlite",
        ingest={"source": "mqtt", "host": "127.0.0.1", "port": 1, "tls": False, "reconnect_min_s": 0.1},
    )
    with ServerThread(cfg, wait_source=False) as st:
        time.sleep(0.3)
        ok, why = st.server.metrics.readiness()
        assert not ok and "not subscribed" in why
