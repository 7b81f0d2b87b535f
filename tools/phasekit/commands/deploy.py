"""``phasekit deploy``: compile the node firmware and the core with mpy-cross, copy them with mpremote.

The steps, what lands on the flash and ``--frozen``: ``phasekit.node.deploy``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from phasekit.commands import Subparsers
from phasekit.errors import UsageError
from phasekit.node import deploy

EXAMPLES = """examples:
  phasekit deploy --board esp32-devkitc-max485 --dry-run
  phasekit deploy --config nodes/n042 --port /dev/ttyUSB0 --frozen
  phasekit deploy --config nodes/n042 --port /dev/ttyUSB0
  phasekit deploy --board host-virtual --config nodes/n042 --port socket://127.0.0.1:7000
"""


def _usage(msg: str) -> UsageError:
    return UsageError(msg)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "deploy",
        help="compile the firmware and copy it to a node with mpremote",
        description=deploy.__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--board", help="board name (boards/NAME.json) or path; default: the config's board")
    p.add_argument("--config", metavar="DIR", help="provisioned folder (config.json + key file) to copy too")
    p.add_argument("--port", default="auto", help="mpremote device: /dev/ttyUSB0, auto, socket://HOST:PORT")
    p.add_argument("--dry-run", action="store_true", help="compile and list what would be copied, touch no device")
    p.add_argument("--no-reset", action="store_true", help="do not reset the node at the end")
    p.add_argument("--build-dir", metavar="DIR", help="keep the compiled files here (default: a temp folder)")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the file list as JSON")
    p.add_argument(
        "--frozen",
        action="store_true",
        help="the image has phasecore/phasenode/phaseradio frozen in: copy only boot/main, board and config",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.board is None and args.config is None:
        raise _usage("give --board NAME, or --config DIR (whose config names the board)")
    board_name = args.board
    if board_name is None:
        try:
            board_name = json.loads((Path(args.config) / "config.json").read_text())["board"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _usage("%s/config.json: cannot read its board (%s)" % (args.config, e)) from None
    board_path, board = deploy.resolve_board(board_name)
    if args.config is not None:
        deploy.check_config(args.config, board)
    if args.build_dir:
        bd = Path(args.build_dir)
        if bd.exists():
            shutil.rmtree(bd)
    try:
        staged = deploy.stage(board_path, args.config, args.build_dir, host=board.is_host, frozen=args.frozen)
    except deploy.DeployError as e:
        print("phasekit deploy: %s" % e, file=sys.stderr)
        return 1
    try:
        mpy = staged.size_of("lib/", ".mpy")
        if args.dry_run:
            if args.json:
                print(
                    json.dumps(
                        {
                            "files": [[f[0], f[2]] for f in staged.files],
                            "total": staged.total,
                            "mpy_total": mpy,
                            "mpy_version": staged.mpy_version,
                        },
                        indent=1,
                    )
                )
                return 0
            print("would copy to the flash of a %s board (%s):" % (board.name, board_path))
            for dev_path, _local, size in staged.files:
                print("  %8d  /%s" % (size, dev_path))
            print(
                "%d files, %d bytes (%s); firmware + core as .mpy v%s: %d bytes (%s)"
                % (len(staged.files), staged.total, deploy.kb(staged.total), staged.mpy_version, mpy, deploy.kb(mpy))
            )
            return 0
        print(
            "deploy: compiled %d modules with mpy-cross (.mpy v%s): %s"
            % (sum(1 for f in staged.files if f[0].endswith(".mpy")), staged.mpy_version, deploy.kb(mpy)),
            flush=True,
        )
        deploy.deploy(staged, args.port, reset=not args.no_reset, echo=lambda m: print(m, flush=True))
        return 0
    except deploy.DeployError as e:
        print("phasekit deploy: %s" % e, file=sys.stderr)
        return 1
    finally:
        if not args.build_dir:
            shutil.rmtree(staged.root, ignore_errors=True)
