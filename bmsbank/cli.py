"""The ``bmsbank`` command line: demo, status, tap, control, decode, limits, simulate, ..."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

from bmsbank import config as configuration
from bmsbank import runtime
from bmsbank.errors import BmsBankError, ConfigError, FrameError, MessageError

PROG = "bmsbank"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _subscribe(args: argparse.Namespace, topics: list[bytes]):  # noqa: ANN202 - zmq socket
    import zmq

    endpoint = args.tap
    if not endpoint:
        endpoint = configuration.load(args.config, args.runtime_dir).tap_endpoint
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock, endpoint


def cmd_status(args: argparse.Namespace) -> int:
    """Print one bank view from the tap (``--watch``: redraw it at every bank)."""
    from bmsbank import view
    from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, unpack

    if args.watch or args.cells:
        from bmsbank import watch

        sock, _endpoint = _subscribe(
            args, [TOPIC_BANK, TOPIC_STATE] if args.cells else [TOPIC_BANK]
        )
        return watch.run(sock, sys.stdout, args.cells)
    sock, endpoint = _subscribe(args, [TOPIC_BANK])
    if not sock.poll(int(args.wait * 1000)):
        return runtime.fail(
            PROG,
            f"no bank message on {endpoint} within {args.wait:g} s (is the arbiter running?)",
            1,
        )
    _topic, body = sock.recv_multipart()
    print(view.render(unpack(body)))
    return 0


def cmd_tap(args: argparse.Namespace) -> int:
    """Print the tap stream as JSON lines."""
    from bmsbank.schema import unpack

    topics = [t.encode() for t in (args.topic or ["state", "bank"])]
    sock, _ = _subscribe(args, topics)
    seen = 0
    try:
        while args.count is None or seen < args.count:
            topic, body = sock.recv_multipart()
            msg = _json_safe(unpack(body))
            print(json.dumps({"topic": topic.decode(), **msg}), flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    return 0


#: words the CLI takes for a control value
ON_WORDS = ("on", "true", "1", "yes", "enable", "enabled", "allow")
OFF_WORDS = ("off", "false", "0", "no", "disable", "disabled", "block")


def control_value(action: str, text: str) -> bool:
    """The value of ``bmsbank control PACK ACTION VALUE`` (raises ValueError with a hint)."""
    word = text.strip().lower()
    if word in ON_WORDS:
        return True
    if word in OFF_WORDS and action != "reset_soc":
        return False
    hint = "true" if action == "reset_soc" else "on or off"
    raise ValueError(f"{action} takes {hint}, got {text!r}")


def cmd_control(args: argparse.Namespace) -> int:
    """Send one control request to the arbiter and print its result."""
    from bmsbank import control

    try:
        value = control_value(args.action, args.value)
    except ValueError as exc:
        return runtime.fail(PROG, exc, 2)
    endpoint = args.endpoint
    if not endpoint:
        endpoint = configuration.load(args.config, args.runtime_dir).control_endpoint
    try:
        result = control.request(endpoint, args.pack, args.action, value, args.timeout)
    except ValueError as exc:
        return runtime.fail(PROG, exc, 2)
    shown = "on" if value is True and args.action != "reset_soc" else "off" if not value else ""
    what = f"{args.pack} {args.action}" + (f" {shown}" if shown else "")
    if not result["ok"]:
        return runtime.fail(PROG, f"{what}: {result['error']}", 1)
    print(f"{what}: ok")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode captured replies with a BMS family and print the state as JSON."""
    from bmsbank.services.poller import plugins
    from bmsbank.services.poller.decode import decode_replies, parse_args

    try:
        if plugins.info(args.bms).link == "CAN":
            return _decode_can(args)
        plugin = plugins.load(args.bms)
        replies = parse_args(args.frames)
    except (KeyError, ValueError) as exc:
        return runtime.fail(PROG, exc.args[0] if exc.args else exc, 2)
    try:
        parts, stats, left = decode_replies(plugin, replies, args.address)
    except FrameError as exc:
        return runtime.fail(PROG, f"rejected ({exc.kind}): {exc}", 1)
    if left or stats.noise_bytes:
        print(f"{PROG}: ignored {left + stats.noise_bytes} byte(s) outside frames",
              file=sys.stderr)  # fmt: skip
    if not parts:
        return runtime.fail(PROG, f"rejected: no complete {plugin.title} frame in the input", 1)
    try:
        fields = plugin.state(parts)
    except FrameError as exc:
        print(json.dumps(_json_safe({"parts": parts}), indent=2))
        return runtime.fail(PROG, f"incomplete state: {exc.reason}", 1)
    address = args.address if args.address is not None else plugin.default_address
    return _print_state(plugin.name, address, fields, stats.as_dict())


def _decode_can(args: argparse.Namespace) -> int:
    """``bmsbank decode`` for a CAN family: candump ``ID#DATA`` frames, one pack's state.

    Raises:
        KeyError, ValueError: an unknown family, a frame that is not ``ID#DATA``.

    """
    from bmsbank.services.poller import plugins
    from bmsbank.services.poller.can_family import CanFamily
    from bmsbank.services.poller.decode import decode_can_frames, parse_can_args

    family: CanFamily = plugins.load(args.bms)  # type: ignore[assignment]  # a CAN family
    frames = parse_can_args(args.frames)
    try:
        packs, stats = decode_can_frames(family, frames, args.address)
    except FrameError as exc:
        return runtime.fail(PROG, f"rejected ({exc.kind}): {exc}", 1)
    if stats.unexpected:
        print(f"{PROG}: ignored {stats.unexpected} frame(s) of no {family.title} pack",
              file=sys.stderr)  # fmt: skip
    if len(packs) != 1:
        found = ", ".join(map(str, sorted(packs))) or "none"
        return runtime.fail(PROG, f"rejected: frames of one pack wanted (--address), "
                                  f"got packs {found}", 1)  # fmt: skip
    address, parts = next(iter(packs.items()))
    try:
        fields = family.state(parts)
    except FrameError as exc:
        print(json.dumps(_json_safe({"parts": parts}), indent=2))
        return runtime.fail(PROG, f"incomplete state: {exc.reason}", 1)
    return _print_state(family.name, address, fields, stats.as_dict())


def _print_state(bms: str, address: int, fields: dict[str, Any], link: dict[str, int]) -> int:
    """Print the state a poller would send, and say whether it would pass its checks."""
    from bmsbank.plausibility import default_bounds, implausible
    from bmsbank.schema import validate_state
    from bmsbank.state import make_state

    state = make_state("decode", address, bms, 0, fields, link)
    print(json.dumps(_json_safe(state), indent=2))
    # What a poller would do with it: the schema, then a LiFePO4 pack's plausible readings.
    try:
        validate_state(state)
        why = implausible(state, default_bounds())
    except MessageError as exc:
        why = str(exc)
    if why is not None:
        return runtime.fail(PROG, f"rejected (implausible): {why}", 1)
    return 0


def cmd_limits(args: argparse.Namespace) -> int:
    """Run the bank engine on JSON lines (stdin or a file) and write JSON lines."""
    import logging

    from bmsbank.services.arbiter import stream

    logging.getLogger("bmsbank").setLevel(logging.ERROR)  # rejections are in the output lines
    if args.stream or args.file in (None, "-"):
        return stream.run(sys.stdin, sys.stdout)
    try:
        with open(args.file, encoding="utf-8") as fh:
            return stream.run(fh, sys.stdout)
    except OSError as exc:
        return runtime.fail(PROG, f"{args.file}: {exc.strerror}", 2)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a closed-loop plant procedure against the engine and print its metrics."""
    import logging

    from bmsbank import plant

    logging.getLogger("bmsbank").setLevel(logging.ERROR)  # packs lost on purpose: in the metrics
    if args.procedure not in plant.PROCEDURES:
        known = ", ".join(plant.PROCEDURES)
        return runtime.fail(PROG, f"unknown procedure {args.procedure!r}; one of {known}", 2)
    from bmsbank.plant.checks import check
    from bmsbank.plant.plot import progress_line, write

    show = sys.stderr.isatty()  # a progress line for people; none in a pipe or a log
    progress = progress_line(args.procedure, sys.stderr) if show else None
    trace = args.trace or bool(args.plot)
    metrics = plant.run(args.procedure, seed=args.seed, trace=trace, progress=progress)
    if show:
        print("\r\033[K", end="", file=sys.stderr)
    if args.plot:
        try:
            write(
                args.plot, metrics["trace"], f"bmsbank simulate {args.procedure} --seed {args.seed}"
            )
        except (OSError, ValueError) as exc:
            return runtime.fail(PROG, f"--plot: {args.plot}: {getattr(exc, 'strerror', exc)}", 2)
        if not args.trace:
            del metrics["trace"]
    print(json.dumps(_json_safe(metrics), indent=2))
    results = check(args.procedure, metrics)  # docs/LIMITS.md's requirements, on stderr
    for text, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {text}", file=sys.stderr)
    return 0 if all(ok for _, ok in results) else 1


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the bank view page (docs/WEB.md); supervisord runs it when [web] enabled = true."""
    from bmsbank.web.__main__ import main as web_main

    argv = ["--config", args.config] if args.config else []
    return web_main(argv + (["--runtime-dir", args.runtime_dir] if args.runtime_dir else []))


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    import os

    from bmsbank import demo

    if args.can is not None and args.can != "none" and not all(args.can.partition(":")[::2]):
        return runtime.fail(PROG, f"--can: expected INTERFACE:CHANNEL or none, got {args.can!r}")
    rundir = args.runtime_dir and os.path.abspath(args.runtime_dir)  # config wants it absolute
    return demo.run(args.duration, args.can, rundir, args.keep, args.profile)


def cmd_supervisor_config(args: argparse.Namespace) -> int:
    """Print supervisord.conf for a configuration."""
    from bmsbank import supervisor

    config = configuration.load(args.config)
    try:
        text = supervisor.render_installation(
            config, args.python, args.config_path or config.source
        )
    except supervisor.UnsafeValue as exc:
        return runtime.fail(PROG, exc, 2)
    print(text, end="")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Load a config file and say what it configures (every problem, one line each, exit 2)."""
    config = configuration.load(args.config)
    processes = len(config.processes())
    ble = sum(configuration.ble_target(p.device) is not None for p in config.ports)
    radio = f", {ble} BLE device(s)" if ble else ""
    radio += f", {len(config.can_inputs)} CAN input(s)" if config.can_inputs else ""
    print(
        f"{config.source}: ok: {len(config.ports) - ble} port(s){radio}, "
        f"{len(config.pack_ids())} pack(s), {processes} poller process(es)"
    )
    return 0


def cmd_import_serialbattery(args: argparse.Namespace) -> int:
    """Print a dbus-serialbattery config.ini as a bmsbank config (docs/IMPORT.md)."""
    from bmsbank import importer

    print(importer.convert(args.ini, args.default).toml, end="")
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    """List the USB serial adapters and which configured port uses which."""
    from bmsbank import ports

    config = None
    path = args.config or os.environ.get(configuration.ENV_CONFIG)
    if path or os.path.exists(configuration.DEFAULT_CONFIG):
        config = configuration.load(path)
    lines, warnings = ports.report(ports.adapters(), config)
    print("\n".join(lines) if lines else "no USB serial adapters found")
    for warning in warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """Find the BMSs answering on a serial port; print them as a ready ``[[ports]]`` block."""
    from bmsbank.services.poller import plugins, scan

    if args.ble:
        return _scan_ble(args)
    if not args.device:
        print(f"{PROG}: scan: name a serial device, or --ble", file=sys.stderr)
        return 2
    try:
        addresses = scan.parse_addresses(args.addresses) if args.addresses else None
        families = args.bms.split(",") if args.bms else None
        for name in families or ():
            plugins.info(name)
    except (ValueError, KeyError) as exc:
        print(f"{PROG}: scan: {exc.args[0]}", file=sys.stderr)
        return 2
    show = sys.stderr.isatty() and not args.quiet

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"\r\033[K{line}" if show else line, end="" if show else "\n",
                  file=sys.stderr, flush=True)  # fmt: skip

    started = time.monotonic()
    found = scan.scan(args.device, addresses, families, progress)
    if show:
        print("\r\033[K", end="", file=sys.stderr)
    took = time.monotonic() - started
    if not found:
        print(f"{PROG}: scan: no BMS answered on {args.device} ({took:.1f} s)", file=sys.stderr)
        return 1
    name = args.name or os.path.basename(args.device).replace("usb-", "")[:32] or "port"
    print(scan.ports_block(name, args.device, found))
    print(f"{PROG}: scan: {len(found)} found in {took:.1f} s", file=sys.stderr)
    return 0


def _scan_ble(args: argparse.Namespace) -> int:
    """``scan --ble``: the devices advertising nearby (BMSs first) and a ready ``[[ble]]`` block."""
    from bmsbank.errors import TransportError
    from bmsbank.services.poller import ble_scan

    if not args.quiet:
        print(f"{PROG}: scan: listening on {args.adapter} for {args.seconds:g} s",
              file=sys.stderr)  # fmt: skip
    try:
        seen = ble_scan.discover(args.adapter, args.seconds)
    except TransportError as exc:
        print(f"{PROG}: scan: {exc}", file=sys.stderr)
        return 1
    for line in ble_scan.table(seen):
        print(f"# {line}")
    bmss = sum(s.family is not None for s in seen)
    if not bmss:
        print(f"{PROG}: scan: no BMS heard among {len(seen)} device(s)", file=sys.stderr)
        return 1
    print(ble_scan.ble_block(args.adapter, seen))
    print(f"{PROG}: scan: {bmss} BMS(s) among {len(seen)} device(s)", file=sys.stderr)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Make a CURVE key pair for the arbiter or a remote poller."""
    from bmsbank.curve import make_keys

    public, secret = make_keys(args.directory, args.name)
    print(f"public key: {public}\nsecret key: {secret} (readable by you only)")
    return 0


def _add_control(sub: Any) -> None:
    """The ``control`` subcommand's arguments."""
    from bmsbank.schema import CONTROL_ACTIONS

    k = sub.add_parser(
        "control",
        help="change something on one pack (charge, discharge, balance, reset_soc)",
        description="Ask the arbiter to have the pack's poller write to its BMS. Exit code 0: "
        "the BMS acknowledged; 1: refused or failed (the reason is printed); 2: usage error.",
    )
    k.add_argument("pack", help='pack id "port:address", e.g. rs485:3')
    k.add_argument("action", choices=list(CONTROL_ACTIONS))
    k.add_argument("value", help="on/off (true/false) for charge, discharge, balance; "
                   "true for reset_soc")  # fmt: skip
    k.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    k.add_argument("--runtime-dir", help="runtime directory (overrides the config)")
    k.add_argument("--endpoint", help="control endpoint (overrides the config)")
    k.add_argument("--timeout", type=float, default=6.0, help="seconds to wait (default 6)")
    k.set_defaults(func=cmd_control)


class _Version(argparse.Action):
    """``--version``: "bmsbank 0.1.0, compiled (CPython 3.11, x86_64)" (imports the codecs)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        from bmsbank import __version__
        from bmsbank.native import implementation

        print(f"{PROG} {__version__}, {implementation()}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    p = argparse.ArgumentParser(prog=PROG, description="Many BMS, one battery bank for Victron.")
    p.add_argument("--version", action=_Version, help="the version and whether the compiled "
                   "modules or the pure-Python twins run, then exit")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole stack on simulated packs")
    d.add_argument("--duration", type=float, help="stop after SECONDS (default: until Ctrl-C)")
    d.add_argument(
        "--can",
        metavar="INTERFACE:CHANNEL",
        help="CAN output, e.g. slcan:/dev/ttyACM0, socketcan:can0 or none "
        "(default: slcan on a pseudo-terminal, far end printed)",
    )
    d.add_argument("--runtime-dir", help="directory for sockets, ptys and logs (default: temp)")
    d.add_argument("--keep", action="store_true", help="keep the runtime directory afterwards")
    d.add_argument("--profile", choices=["default", "all"], default="default",
                   help="default: eleven packs of five families; all: one pack of every serial "
                        "family (a 12 V bank of 4-cell packs)")  # fmt: skip
    d.set_defaults(func=cmd_demo)

    for name, func, text in (
        ("status", cmd_status, "print one bank view from the tap"),
        ("tap", cmd_tap, "print the state and bank stream as JSON lines"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
        s.add_argument("--runtime-dir", help="runtime directory (overrides the config)")
        s.add_argument("--tap", help="tap endpoint (overrides the config)")
        s.set_defaults(func=func)
        if name == "status":
            s.add_argument("--wait", type=float, default=5.0, help="seconds to wait for a bank")
            s.add_argument(
                "--watch",
                action="store_true",
                help="redraw the view in place at every bank (plain when piped)",
            )
            s.add_argument(
                "--cells",
                action="store_true",
                help="with --watch: a line of cell bars per pack (* = balancing)",
            )
        else:
            s.add_argument("--topic", action="append", choices=["state", "bank"])
            s.add_argument("--count", type=int, help="stop after N messages")

    w = sub.add_parser("web", help="serve the read-only bank view page (docs/WEB.md)")
    w.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    w.add_argument("--runtime-dir", help="runtime directory (overrides the config)")
    w.set_defaults(func=cmd_web)
    _add_control(sub)
    m = sub.add_parser("mqtt", help="publish the bank to MQTT with Home Assistant discovery "
                       "(needs the mqtt extra; docs/MQTT.md)")  # fmt: skip
    from bmsbank import mqtt  # light: paho is imported only when the bridge runs

    mqtt.add_arguments(m)
    m.set_defaults(func=mqtt.cmd_mqtt)

    c = sub.add_parser("decode", help="decode captured replies (hex, in arrival order)")
    c.add_argument("bms", help="BMS family (see the README table), e.g. jbd, jkpb, renogy")
    c.add_argument("frames", nargs="+", metavar="REPLY|REQUEST=REPLY|ID#DATA",
                   help="a reply as hex (spaces and colons ignored), or the request it answers "
                        "and the reply (Modbus replies do not say what they answer); a CAN "
                        "family's frames as candump prints them, ID#DATA")  # fmt: skip
    c.add_argument("--address", type=int, help="address the frames must come from")
    c.set_defaults(func=cmd_decode)

    lim = sub.add_parser("limits", help="run the bank engine on JSON lines (docs/LIMITS.md)")
    lim.add_argument("file", nargs="?", help="input file of JSON lines (default / '-': stdin)")
    lim.add_argument("--stream", action="store_true", help="read stdin, write after every tick")
    lim.set_defaults(func=cmd_limits)

    sim = sub.add_parser("simulate", help="closed-loop battery and charger plant (docs/LIMITS.md)")
    sim.add_argument("procedure", help="feed-in, imbalance, excess-pv, cold-charge, pack-lost, ...")
    sim.add_argument("--seed", type=int, default=1, help="random seed of the plant")
    sim.add_argument("--trace", action="store_true", help="add a per-minute trace")
    sim.add_argument("--plot", metavar="FILE.svg", help="draw cells, CVL and CCL over time")
    sim.set_defaults(func=cmd_simulate)

    g = sub.add_parser("supervisor-config", help="print supervisord.conf for a config file")
    g.add_argument("config", help="the bmsbank config file")
    g.add_argument("--python", default=sys.executable, help="python of the installation")
    g.add_argument("--config-path", help="config path to write into the commands")
    g.set_defaults(func=cmd_supervisor_config)
    u = sub.add_parser("ports", help="the USB serial adapters and which port uses which")
    u.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    u.set_defaults(func=cmd_ports)
    n = sub.add_parser(
        "scan",
        help="find the BMSs on a serial port (or nearby over BLE), print a ready config block",
        description="Ask every serial family's identification request (reads only) at its own "
        "speed and parity, most common first. Without --addresses: each family at its default "
        "address, stopping at the first that answers. With --addresses: every family that "
        "shares a bus at every address. Exit code 0: found; 1: nothing answered or the port is "
        "busy (a running poller holds it); 2: usage error.",
    )  # fmt: skip
    n.add_argument("device", nargs="?",
                   help="serial device, e.g. /dev/serial/by-id/usb-FTDI_...-port0")  # fmt: skip
    n.add_argument("--addresses", metavar="RANGE",
                   help="addresses to sweep, e.g. 1-16 or 1,3,0x30-0x3f")  # fmt: skip
    n.add_argument("--bms", metavar="FAMILY[,FAMILY]", help="try only these families")
    n.add_argument("--name", help="the port name to print (default: from the device)")
    n.add_argument("--quiet", action="store_true", help="no progress line")
    n.add_argument("--ble", action="store_true",
                   help="list the Bluetooth devices advertising nearby instead (name, MAC, RSSI, "
                   "the family matched), then a ready [[ble]] block")  # fmt: skip
    n.add_argument("--adapter", default="hci0", help="Bluetooth adapter for --ble (hci0)")
    n.add_argument("--seconds", type=float, default=5.0, help="how long --ble listens (5)")
    n.set_defaults(func=cmd_scan)
    y = sub.add_parser("keys", help="make a CURVE key pair (remote pollers, see README)")
    y.add_argument("directory", help="where to write NAME.key and NAME.key_secret")
    y.add_argument("name", help="whose keys: arbiter, or the remote poller's name")
    y.set_defaults(func=cmd_keys)

    k = sub.add_parser(
        "check",
        aliases=["check-config"],
        help="check a config file: every problem, one line each (run it before a restart)",
        description="Load and check a config file as the services do. Exit code 0: valid; "
        "2: one line per problem on stderr, each naming the file and the key.",
    )
    k.add_argument("config", help="the bmsbank config file")
    k.set_defaults(func=cmd_check_config)
    m = sub.add_parser(
        "import-serialbattery",
        help="print a dbus-serialbattery config.ini as a bmsbank config (docs/IMPORT.md)",
        description="Print the equivalent bmsbank TOML config, then, as comments, every key "
        "converted and every key not carried over with the reason. Exit code 0: converted; "
        "2: a malformed file or value (the key and file:line are named).",
    )
    m.add_argument("ini", help="dbus-serialbattery's config.ini")
    m.add_argument("--default", metavar="DEFAULT.INI",
                   help="its config.default.ini (default: release v2.0.20250729's)")  # fmt: skip
    m.set_defaults(func=cmd_import_serialbattery)
    from bmsbank import install, record_cli

    install.add_parsers(sub)
    record_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bmsbank`` command."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return configuration.fail(PROG, exc)
    except BmsBankError as exc:
        return runtime.fail(PROG, exc, 1)


if __name__ == "__main__":
    sys.exit(main())
