"""`kampx`: run or check the proxy.

kampx run [--config FILE] [--takeover]
kampx check [--config FILE]
kampx replay FILE.pcap [--script FILE] [--diff OTHER] [--config FILE] [--proxy IP]
             [--address GROUP:IP[/MASK]]...
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


def cmd_replay(args) -> int:
    """Exit 0, or 1 when --diff found requests the two scripts decide differently, 2 when
    the capture, the config or a script cannot be used."""
    import ipaddress
    import tomllib

    from kampx import config
    from kampx.routing import loader
    from kampx.testing.capture import CaptureError
    from kampx.testing.replay import replay

    _setup_logging("WARNING")
    sections: dict = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                sections = tomllib.load(f)
            cfg = config.from_dict(sections, args.config)
        except (OSError, tomllib.TOMLDecodeError, config.ConfigError) as e:
            print(f"kampx: {args.config}: {e}", file=sys.stderr)
            return 2
    else:
        cfg = config.from_dict({})
    script = args.script or cfg.routing.script
    listen = cfg.core.listen_addrs()[0].host if args.config else None
    if listen and ipaddress.ip_address(listen).is_unspecified:
        listen = None  # 0.0.0.0: the capture tells which address the requests went to
    proxy = args.proxy or listen
    try:
        addresses = [_address_row(text) for text in args.address]
        out = replay(args.capture, script, sections, addresses, proxy, print, args.diff)
    except (CaptureError, config.ConfigError) as e:
        print(f"kampx: {e}", file=sys.stderr)
        return 2
    except AddressError as e:
        print(f"kampx: --address {e}", file=sys.stderr)
        return 2
    except loader.ScriptError as e:
        print(f"kampx: route script: {e}", file=sys.stderr)
        return 2
    return 1 if out else 0


class AddressError(ValueError):
    """A --address that is not GROUP:IP[/MASK]."""


def _address_row(text: str) -> tuple:
    """'GROUP:IP[/MASK]' -> a permissions row (port 0 = any, no tag)."""
    import ipaddress

    group, _, net = text.partition(":")
    try:
        network = ipaddress.ip_network(net, strict=False)
        if not group.isdigit():
            raise ValueError(group)
    except ValueError:
        raise AddressError(f"{text}: expected GROUP:IP[/MASK], e.g. 200:203.0.113.10") from None
    return (int(group), str(network.network_address), network.prefixlen, 0, "")


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
    rep = sub.add_parser(
        "replay",
        help="run a capture's requests through a route script and print what kampx would do",
    )
    rep.add_argument("capture", help="pcap or pcapng of SIP over UDP")
    rep.add_argument(
        "--script", metavar="FILE", help="route script (default: the config's [routing] script)"
    )
    rep.add_argument(
        "--diff", metavar="OTHER_SCRIPT", help="show only where OTHER decides otherwise"
    )
    rep.add_argument("--config", metavar="FILE", help="realm, carrier and timers from this file")
    rep.add_argument(
        "--proxy", metavar="IP", help="the proxy's IP in the capture (default: inferred)"
    )
    rep.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="GROUP:IP[/MASK]",
        help="a permissions address row, e.g. 200:203.0.113.10 for the carrier",
    )
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "replay":
        return cmd_replay(args)
    return cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
