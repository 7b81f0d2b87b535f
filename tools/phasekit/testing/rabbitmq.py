"""A throw-away RabbitMQ cluster (one to three nodes) with the MQTT plugin, on free loopback ports.

``with RabbitCluster(workdir, nodes=3) as rc:`` starts the nodes from Debian's
package (``scripts/bootstrap`` installs ``rabbitmq-server``) without its
system wrapper (which switches user and uses system folders): each node runs
the server script of the package's lib folder with its own folders, config
file, ports and node name, all nodes share one private ``epmd`` and one
Erlang cookie, and nodes 2 and 3 join node 1 (``rabbitmqctl join_cluster``).
``rc.nodes[i]`` has ``amqp_port``, ``mqtt_port`` (and ``mqtts_port`` with
``tls=``), ``kill()`` (SIGKILL of its Erlang VM: a node that dies, not one
that leaves), ``start()`` (rejoin) and ``stop()``. ``rc.stop()`` stops every
node (``rabbitmqctl stop``, SIGKILL after a timeout) and then the private epmd,
each by its PID; nothing of the machine's own RabbitMQ is touched.

The one thing to know: queues the uplink's topics reach must be *quorum*
queues (replicated). ``rc.declare_quorum(name, binding)`` makes one; the
MQTT plugin's own per-client queues are not used (the Pis publish only).
Tests only: ``loopback_users = none`` and anonymous MQTT on plain listeners;
with ``tls`` (a ``phasekit.testing.broker.TlsFiles``) an MQTT-over-TLS
listener requires client certificates and maps each to a user named by its
common name (``ssl_cert_login``), as a site's broker would.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from phasekit.errors import PhasekitError
from phasekit.testing.processes import free_port as _free_port
from phasekit.testing.processes import pid_alive as _alive

__all__ = ("RabbitCluster", "RabbitNode", "RabbitError", "rabbit_home")

COOKIE = "PHASEKITTESTCOOKIE"


class RabbitError(PhasekitError, RuntimeError):
    """RabbitMQ is missing, did not start or did not cluster."""


def rabbit_home() -> Path:
    """The package's lib folder (``.../rabbitmq_server-<version>``) holding ``sbin/``."""
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"))
    if not found:
        raise RabbitError("RabbitMQ not found; install it (Debian: apt-get install rabbitmq-server)")
    return Path(found[-1]).parent.parent


def _epmd() -> str:
    for cand in (shutil.which("epmd"), *sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))):
        if cand and Path(cand).exists():
            return cand
    raise RabbitError("epmd not found (Erlang runtime missing)")


class RabbitNode:
    """One node of a ``RabbitCluster``: its folders, ports and process."""

    def __init__(self, cluster: RabbitCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = "phk%d_%d@localhost" % (index + 1, cluster.epmd_port)
        self.folder = cluster.workdir / ("node%d" % (index + 1))
        self.amqp_port = _free_port()
        self.mqtt_port = _free_port()
        self.mqtts_port = _free_port() if cluster.tls is not None else 0
        self.dist_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    @property
    def env(self) -> dict[str, str]:
        f = self.folder
        return dict(
            os.environ,
            HOME=str(self.cluster.workdir),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_CONFIG_FILE=str(f / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(f / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(f / "mnesia"),
            RABBITMQ_LOG_BASE=str(f / "log"),
            RABBITMQ_CONF_ENV_FILE=str(f / "rabbitmq-env.conf.missing"),
            RABBITMQ_PID_FILE=str(f / "rabbit.pid"),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.cluster.epmd_port),
            RABBITMQ_NODE_PORT=str(self.amqp_port),
        )

    def _write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "log").mkdir(exist_ok=True)
        lines = [
            "listeners.tcp.default = 127.0.0.1:%d" % self.amqp_port,
            "mqtt.listeners.tcp.default = 127.0.0.1:%d" % self.mqtt_port,
            "mqtt.allow_anonymous = true",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = warning",
            # A quorum queue needs a majority; a node that died must not take the cluster with it.
            "cluster_partition_handling = pause_minority",
        ]
        tls = self.cluster.tls
        if tls is not None:
            lines += [
                "mqtt.listeners.ssl.default = 127.0.0.1:%d" % self.mqtts_port,
                "ssl_options.cacertfile = %s" % tls.ca,
                "ssl_options.certfile = %s" % tls.server_cert,
                "ssl_options.keyfile = %s" % tls.server_key,
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = true",
                "mqtt.ssl_cert_login = true",
                "ssl_cert_login_from = common_name",
            ]
        (self.folder / "rabbitmq.conf").write_text("\n".join(x for x in lines if x) + "\n")
        (self.folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        """``rabbitmqctl -n NODE ARGS``; returns its output."""
        p = subprocess.run(
            [str(self.cluster.home / "sbin" / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise RabbitError("rabbitmqctl %s on %s: %s" % (" ".join(args), self.name, (p.stderr or p.stdout)[-800:]))
        return p.stdout

    def start(self, timeout: float = 90) -> None:
        """Start the node and wait until its app runs (a node that was killed rejoins its cluster)."""
        self._write_config()
        self.log = open(self.folder / "console.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.cluster.home / "sbin" / "rabbitmq-server")],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=str(self.folder),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RabbitError("%s exited at start: %s" % (self.name, self.console()[-1500:]))
            p = subprocess.run(
                [
                    str(self.cluster.home / "sbin" / "rabbitmqctl"),
                    "-n",
                    self.name,
                    "-q",
                    "await_startup",
                    "--timeout",
                    "5",
                ],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if p.returncode == 0:
                return
            time.sleep(0.3)
        raise RabbitError("%s did not start within %d s: %s" % (self.name, timeout, self.console()[-1500:]))

    def console(self) -> str:
        try:
            return (self.folder / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    @property
    def vm_pid(self) -> int | None:
        """The PID of the node's Erlang VM (the server script is its parent)."""
        try:
            return int((self.folder / "rabbit.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: the node dies as a crashed machine would."""
        pid = self.vm_pid
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_log()

    def stop(self) -> None:
        """A clean stop (rabbitmqctl stop), SIGKILL if it does not end within 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return
        self.ctl("stop", check=False, timeout=40)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        pid = self.vm_pid
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


class RabbitCluster:
    """``nodes`` RabbitMQ nodes clustered on 127.0.0.1 with the MQTT plugin; see the module docstring."""

    def __init__(self, workdir: str | Path, nodes: int = 3, tls: Any = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = rabbit_home()
        self.tls = tls
        self.epmd_port = _free_port()
        self._epmd: subprocess.Popen[bytes] | None = None
        self.nodes = [RabbitNode(self, i) for i in range(nodes)]

    def start(self) -> RabbitCluster:
        cookie = self.workdir / ".erlang.cookie"
        cookie.write_text(COOKIE)
        cookie.chmod(0o400)
        self._epmd = subprocess.Popen(
            [_epmd(), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for node in self.nodes:
                node.start()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.name)
                node.ctl("start_app")
            if self.tls is not None:
                first.ctl("add_user", "phasegate-test", "unused-password-cert-login")
                first.ctl("set_permissions", "-p", "/", "phasegate-test", ".*", ".*", ".*")
        except BaseException:
            self.stop()
            raise
        return self

    def running(self) -> list[RabbitNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def amqp_hosts(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...``: every node, for ``[ingest] host``."""
        return ",".join("127.0.0.1:%d" % n.amqp_port for n in self.nodes)

    def declare_quorum(self, name: str, binding: str, exchange: str = "amq.topic") -> None:
        """A durable quorum queue ``name`` bound to ``exchange`` with ``binding`` (via AMQP, pika)."""
        import pika

        node = self.running()[0]
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
        try:
            ch = conn.channel()
            ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
            ch.queue_bind(name, exchange, routing_key=binding)
        finally:
            conn.close()

    def queue_depth(self, name: str) -> int:
        """Messages ready plus unacknowledged in queue ``name``."""
        out = self.running()[0].ctl("list_queues", "-q", "name", "messages", timeout=60)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return int(parts[1])
        return 0

    def stop(self) -> None:
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception:  # one node that will not stop must not keep the others (or epmd) running
                node.kill()
        if self._epmd is not None:
            if self._epmd.poll() is None:
                self._epmd.terminate()
                try:
                    self._epmd.wait(5)
                except subprocess.TimeoutExpired:
                    self._epmd.kill()
                    self._epmd.wait(5)
            self._epmd = None

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
