"""Helpers for tests that run `phasekit gateway run` as a process: its config file, key and environment."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIERS = ("shared", "firmware", "gateway", "server-min", "tools")


def tier_env():
    """The environment with the tiers of this checkout on PYTHONPATH (whatever the venv mapped when installed)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in TIERS))


def write_config(folder, site_key, body):
    """Write ``site.key`` (mode 600) and ``gw.toml`` = ``body`` into ``folder``; returns the config path."""
    folder = Path(folder)
    (folder / "site.key").write_text(site_key.hex())
    os.chmod(folder / "site.key", 0o600)
    path = folder / "gw.toml"
    path.write_text(body)
    return path


def uplink_table(broker, **keys):
    """An [uplink] table for a ``phasekit.broker.LocalBroker`` (mutual TLS), plus ``keys`` as TOML values."""
    tls = broker.tls
    lines = ["[uplink]", 'host = "%s"' % broker.host, "port = %d" % broker.port, 'ca = "%s"' % tls.ca,
             'cert = "%s"' % tls.client_cert, 'key = "%s"' % tls.client_key]
    for k, v in keys.items():
        lines.append("%s = %s" % (k, '"%s"' % v if isinstance(v, str) else
                                  "[%s]" % ", ".join('"%s"' % x for x in v) if isinstance(v, list) else v))
    return "\n".join(lines) + "\n"


def phasekit_popen(*args, **kw):
    """``python -m phasekit.cli ARGS`` as a process of its own, from the checkout."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen([sys.executable, "-m", "phasekit.cli", *args], cwd=str(ROOT), env=tier_env(), **kw)


def python_popen(*args, **kw):
    """``python ARGS`` (e.g. ``-m phaseserver ...``) from the checkout."""
    return subprocess.Popen([sys.executable, *args], cwd=str(ROOT), env=tier_env(), **kw)
