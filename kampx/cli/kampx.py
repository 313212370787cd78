"""`kampx`: run or check the proxy.

kampx run [--config FILE] [--takeover]
kampx check [--config FILE]
kampx --version
"""

from __future__ import annotations

import argparse
import logging
import sys

from kampx import __version__


def _setup_logging(level: str) -> None:
    # stderr, one line per event, no timestamps of our own: journald and docker add them
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _fail(msg: str) -> int:
    print(f"kampx: {msg}", file=sys.stderr)
    return 1


def cmd_check(args) -> int:
    from kampx import config
    from kampx.routing import loader

    try:
        cfg = config.load(args.config)
        loader.load(cfg.routing.script)
    except config.ConfigError as e:
        return _fail(str(e))
    except loader.ScriptError as e:
        return _fail(f"route script: {e}")
    from kampx.db import StorageError, open_storage

    try:
        with open_storage(cfg) as storage:
            storage.connect()  # a server: reachable, and its schema one kampx knows
    except StorageError as e:
        return _fail(f"database {cfg.db.display_url}: {e}")  # no password on a terminal
    print(
        f"kampx: {cfg.path or 'embedded default configuration'}: OK "
        f"(route script {cfg.routing.script})"
    )
    return 0


def cmd_run(args) -> int:
    from kampx import config
    from kampx.supervisor import StartupError, Supervisor

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        return _fail(str(e))
    _setup_logging(cfg.core.log_level)
    sup = Supervisor(cfg, takeover=args.takeover)
    try:
        sup.start()
    except StartupError as e:
        return _fail(str(e))
    return sup.run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kampx", description="kampx SIP proxy")
    ap.add_argument("--version", action="version", version=f"kampx {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the proxy in the foreground")
    run.add_argument(
        "--config",
        help="config file (default: $KAMPX_CONFIG, "
        "/etc/kampx/kampx.toml, else the embedded default)",
    )
    run.add_argument(
        "--takeover",
        action="store_true",
        help="share listen ports already bound by another kampx (upgrades)",
    )
    chk = sub.add_parser("check", help="validate the config and route script, then exit")
    chk.add_argument("--config")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    return cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
