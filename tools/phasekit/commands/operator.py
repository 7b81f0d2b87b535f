"""``phasekit operator``: issue sealed operator commands to a node through the broker.

``key`` derives an operator's key file from the site key (run it where the
site key lives; hand the operator only the key file). ``send`` seals one
command with that key and the operator's persistent counter
(phaseuplink.operator) and publishes it with QoS 1 to
``phasekit/<site>/<transformer>/command``; the transformer Pi verifies it
before anything moves and journals the node's ack to the uplink. ``pause``
and ``resume`` (no ``--node``) pause and resume the balancer of the whole
transformer: sealed for node 0, the Pi itself (no automatic moves while
paused; operator moves still go).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from phasekit.commands import Subparsers

EXAMPLES = """examples:
  phasekit operator key --site-key secrets/site.key --operator ops-1 --out ops-1.key
  phasekit operator send --key-file ops-1.key --operator ops-1 --site feeder-12 --transformer tx-0457 \\
      --node 7 --host mqtt.example.net --ca ca.crt --cert ops.crt --tls-key ops.key move B
  phasekit operator send --key-file ops-1.key --operator ops-1 --site feeder-12 --transformer tx-0457 \
      --host mqtt.example.net --ca ca.crt --cert ops.crt --tls-key ops.key pause
"""

_OPS = ("move", "lock", "unlock", "report", "pause", "resume")
_TRANSFORMER_OPS = ("pause", "resume")  # for the transformer's Pi itself (node 0)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "operator",
        help="derive operator keys, send sealed operator commands",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="operator_verb", metavar="ACTION")
    verbs.required = True
    k = verbs.add_parser("key", help="write an operator's key file (derived from the site key)")
    k.add_argument("--site-key", required=True, help="the site key file (64 hex digits)")
    k.add_argument("--operator", required=True, help="operator id, e.g. ops-1")
    k.add_argument("--out", required=True, help="key file to write (mode 600; never overwritten)")
    k.add_argument(
        "--generation",
        type=int,
        default=0,
        help="the Pi gate's operator key generation (phasekit gateway operator-reset)",
    )
    k.set_defaults(func=_key)
    s = verbs.add_parser(
        "send",
        help="seal and publish one command",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--key-file", required=True, help="the operator's key file from 'phasekit operator key'")
    s.add_argument("--operator", required=True)
    s.add_argument("--counter-file", help="the operator's sequence counter (default: KEY_FILE.seq)")
    s.add_argument("--site", required=True)
    s.add_argument("--transformer", required=True)
    s.add_argument("--node", type=int, help="node link address 1..247 (none for pause and resume)")
    s.add_argument(
        "--ttl", type=int, default=300, help="seconds the command stays valid (default 300; the Pi refuses above 900)"
    )
    s.add_argument("--host", required=True, help="MQTT broker")
    s.add_argument("--port", type=int, default=8883)
    s.add_argument("--ca", help="broker CA certificate")
    s.add_argument("--cert", help="client certificate")
    s.add_argument("--tls-key", help="client certificate's private key")
    s.add_argument("--no-tls", action="store_true", help="plain MQTT (a trusted lab network only)")
    s.add_argument("op", choices=_OPS)
    s.add_argument("phase", nargs="?", choices=("A", "B", "C"), help="target phase of a move")
    s.set_defaults(func=_send)


def _key(args: argparse.Namespace) -> int:
    from phasegate.registry import RegistryError, load_site_key
    from phasekit.errors import UsageError
    from phaseuplink.operator import format_key_file, operator_key

    try:
        site_key = load_site_key(args.site_key)
        key, base_iv = operator_key(site_key, args.operator, args.generation)
    except (RegistryError, ValueError) as e:
        raise UsageError(str(e)) from None
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError("%s exists; an operator key file is never overwritten" % args.out) from None
    with os.fdopen(fd, "w") as f:
        f.write(format_key_file(key, base_iv))
    print("wrote operator key for %s to %s (mode 600)" % (args.operator, args.out))
    return 0


def _read_key(path: str) -> tuple[bytes, bytes]:
    from phasekit.errors import UsageError
    from phaseuplink.operator import OperatorFormatError, read_key_file

    try:
        return read_key_file(path)
    except OperatorFormatError as e:
        raise UsageError(str(e)) from None


def _send(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from phasecore import codes, msg
    from phasecore.replay import SequenceCounter
    from phasegate.registry import CounterFile
    from phasekit.errors import UsageError
    from phaseuplink.operator import seal_command

    if (args.op == "move") != (args.phase is not None):
        raise UsageError("a move needs a target phase (A, B or C); other commands take none")
    from phasegate.operator import MAX_AHEAD_S

    if not 1 <= args.ttl <= MAX_AHEAD_S:
        raise UsageError("--ttl %d outside 1..%d (the Pi refuses a deadline further ahead)" % (args.ttl, MAX_AHEAD_S))
    if args.op in _TRANSFORMER_OPS:
        if args.node not in (None, 0):
            raise UsageError("%s is for the whole transformer: no --node" % args.op)
        args.node = 0
    elif args.node is None or not 1 <= args.node <= 247:
        raise UsageError("--node %s outside 1..247 (%s needs a node)" % (args.node, args.op))
    key, base_iv = _read_key(args.key_file)
    counter_file = CounterFile(args.counter_file or args.key_file + ".seq")
    counter = SequenceCounter(counter_file.load, counter_file.save, block=16)
    op = {
        "move": msg.OP_MOVE,
        "lock": msg.OP_LOCK,
        "unlock": msg.OP_UNLOCK,
        "report": msg.OP_REPORT,
        "pause": msg.OP_PAUSE,
        "resume": msg.OP_RESUME,
    }[args.op]
    seq = counter.next()
    fields = {"id": seq & 0xFFFFFFFF, "op": op, "deadline_s": int(time.time()) + args.ttl}
    if args.phase:
        fields["phase"] = codes.PHASE_NAMES.index(args.phase)
    payload = seal_command(key, base_iv, args.operator, seq, args.site, args.transformer, args.node, fields)
    topic = "phasekit/%s/%s/command" % (args.site, args.transformer)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="phasekit-operator-%d" % os.getpid())
    if not args.no_tls:
        if not args.ca:
            raise UsageError("--ca is needed for TLS (or --no-tls on a trusted lab network)")
        client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.tls_key)
    try:
        client.connect(args.host, args.port, 30)
    except OSError as e:
        print("phasekit operator: cannot reach %s:%d: %s" % (args.host, args.port, e), file=sys.stderr)
        return 1
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=15)
        if not info.is_published():
            print("phasekit operator: the broker did not acknowledge the command", file=sys.stderr)
            return 1
    finally:
        client.disconnect()
        client.loop_stop()
    target = "node %d" % args.node if args.node else "the balancer"
    print(
        "sent %s%s to %s of %s/%s (valid %d s)"
        % (args.op, " " + args.phase if args.phase else "", target, args.site, args.transformer, args.ttl)
    )
    return 0
