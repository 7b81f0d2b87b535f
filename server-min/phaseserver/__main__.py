"""``python -m phaseserver``: run the MQTT ingest into a SQLite file until SIGINT or SIGTERM."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from phaseserver.ingest import TOPIC, Ingest, IngestConfig
from phaseserver.storage import Storage

EXAMPLE = """example:
  python -m phaseserver --host mqtt.example.net --ca ca.crt --cert server.crt --key server.key --db phasekit.db
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m phaseserver",
        description="phasekit server-min: MQTT ingest.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", required=True, help="MQTT broker host")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--ca", help="CA certificate of the broker (PEM)")
    p.add_argument("--cert", help="client certificate (PEM)")
    p.add_argument("--key", help="client private key (PEM)")
    p.add_argument("--no-tls", action="store_true", help="plain MQTT (a trusted lab network only)")
    p.add_argument("--db", required=True, help="SQLite file to store records in")
    p.add_argument("--client-id", default="phaseserver")
    p.add_argument("--topic", default=TOPIC)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = IngestConfig(
            args.host,
            args.port,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            tls=not args.no_tls,
            client_id=args.client_id,
            topic=args.topic,
        )
    except ValueError as e:
        print("phaseserver: error: %s" % e, file=sys.stderr)
        return 2
    with Storage(args.db) as storage:
        asyncio.run(_serve(Ingest(storage, config)))
    return 0


async def _serve(ingest: Ingest) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await ingest.run(stop)


if __name__ == "__main__":
    sys.exit(main())
