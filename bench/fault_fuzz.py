"""Fault campaign, part 1: mutated BMS replies through the poller's real path.

For one family, its simulator's replies to one poll cycle (16 cells, 2 probes) are mutated one
reply per trial (bit flips, byte changes, truncation, insertion, deletion, duplication of a span
or of a whole frame, a wrong length field), then the length field and the check value are fixed
up (most of the time) so the mutation reaches the decoder, for plain sums and CRCs alike. Each
trial runs the poller's path: ``run_query`` for every request of the cycle (extract, parse,
frames collected), ``plugin.state``, ``make_state``, ``validate_state`` and
``plausibility.implausible`` with the bounds of a configured 16-cell pack.

A trial ends in one outcome: a frame or link error (counted by kind), an incomplete cycle, a
state the schema refuses, one plausibility catches, one accepted as the clean cycle's, one
accepted with changed values, or a crash (any other exception). An independent oracle checks
every accepted state against the pack's plausible range (must never fail). A trial slower than
HANG_SECONDS is timed again and counted as a hang when it is slow twice.

The generator draws from one seeded stream and fixes check values with the pure-Python codec,
so a compiled run and a twin run (``BMSBANK_PURE=1``, another process) see the same inputs; each
writes a 32-bit digest of every trial's outcome and the parent compares them.
"""

from __future__ import annotations

import math
import random
import sys
import time
import traceback
import zlib
from array import array
from typing import Any

HANG_SECONDS = 0.1
CELLS = 16
#: the oracle's limits, written here independently of bmsbank.plausibility (LiFePO4)
ORACLE_CELL = (1.0, 4.5)  # V
ORACLE_VOLTAGE = (0.05, 1.0)  # fraction of the cells' sum, plus volts
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


class Replay:
    """A link that answers each request with the (mutated) bytes of this trial (a ``Link``)."""

    timeout = 0.5

    def __init__(self, timeout_error: type[Exception]) -> None:
        self.replies: dict[bytes, bytes] = {}
        self.buf = bytearray()
        self.timeout_error = timeout_error

    def exchange(self, request: bytes, extract: Any) -> bytes:
        self.buf = bytearray(self.replies.get(request, b""))  # the poller drains before asking
        return self.receive(extract)

    def receive(self, extract: Any) -> bytes:
        frame = extract(self.buf)
        if frame is None:
            raise self.timeout_error("truncated" if self.buf else "timeout")
        return frame


# -- mutation ---------------------------------------------------------------------------------
def split_frames(framer: Any, reply: bytes) -> list[bytes]:
    """The frames of a clean reply, in order (pure-Python framer)."""
    from bmsbank.native.spec import FRAME

    out, buf = [], bytearray(reply)
    while buf:
        status, begin, end, _ = framer.scan(buf)
        if status != FRAME:
            raise AssertionError(f"clean reply does not frame: {bytes(buf).hex()}")
        out.append(bytes(buf[begin:end]))
        del buf[:end]
    return out


def _put_check(frame: bytearray, chk: Any, base: int, end: int) -> None:
    """Write ``chk``'s value over ``frame[base:end]`` (a sub-frame) in place."""
    from bmsbank.native import _frames_py as py

    if chk.algorithm == "none":
        return
    lo, hi, at = base + chk.start, end + chk.end, end + chk.at
    if lo > hi or at < base or at + chk.size > end:
        return
    value = py.checksum(chk.algorithm, frame, lo, hi)
    if chk.fmt == "hex4":
        frame[at : at + 4] = f"{value & 0xFFFF:04X}".encode()
        return
    size = chk.size
    value &= (1 << (8 * size)) - 1
    order = "little" if chk.fmt.endswith("le") else "big"
    frame[at : at + size] = value.to_bytes(size, order)


def fix_length(spec: Any, frame: bytearray) -> None:
    """Make the frame's length field say its real length (when it has one)."""
    from bmsbank.native.spec import AsciiHex, Binary, ModbusRtu

    if isinstance(spec, Binary) and not spec.fixed_length:
        size = {"u8": 1, "u16be": 2, "u16le": 2}[spec.length_fmt]
        value = len(frame) - spec.length_adjust
        at = spec.length_offset
        if 0 <= value < 1 << (8 * size) and at + size <= len(frame):
            order = "little" if spec.length_fmt.endswith("le") else "big"
            frame[at : at + size] = value.to_bytes(size, order)
    elif isinstance(spec, ModbusRtu) and len(frame) > 5 and frame[1] in (1, 2, 3, 4):
        frame[2] = (len(frame) - 5) & 0xFF
    elif isinstance(spec, AsciiHex):
        lat = 1 + spec.head
        chars = len(frame) - (lat + 4 + 4 + 1)
        if 0 <= chars <= 0xFFF and lat + 4 <= len(frame):
            lchk = -((chars >> 8) + (chars >> 4 & 0xF) + (chars & 0xF)) & 0xF
            frame[lat : lat + 4] = f"{lchk << 12 | chars:04X}".encode()


def fix_check(spec: Any, frame: bytearray) -> None:
    """Recompute the frame's check value(s) after a mutation, in place."""
    from bmsbank.native import _frames_py as py
    from bmsbank.native.spec import AsciiHex, Binary, FrameThenAck, ModbusRtu

    n = len(frame)
    if isinstance(spec, Binary):
        _put_check(frame, spec.check, 0, n)
    elif isinstance(spec, ModbusRtu):
        if n >= 4:
            frame[n - 2 :] = py.crc16_modbus(frame, 0, n - 2).to_bytes(2, "little")
    elif isinstance(spec, AsciiHex):
        if n >= 6:
            frame[n - 5 : n - 1] = f"{py.negsum16(frame, 1, n - 5):04X}".encode()
    elif isinstance(spec, FrameThenAck):
        body = min(spec.frame.fixed_length, n)
        _put_check(frame, spec.frame.check, 0, body)
        if n - body >= spec.ack_length:  # the ack: the last ack_length bytes (a pad may follow)
            end = n - (1 if frame[n - 1] == spec.frame.pad and n - body > spec.ack_length else 0)
            _put_check(frame, spec.ack_check, end - spec.ack_length, end)


def _length_span(spec: Any) -> tuple[int, int] | None:
    from bmsbank.native.spec import AsciiHex, Binary, ModbusRtu

    if isinstance(spec, Binary) and not spec.fixed_length:
        return spec.length_offset, {"u8": 1, "u16be": 2, "u16le": 2}[spec.length_fmt]
    if isinstance(spec, ModbusRtu):
        return 2, 1
    if isinstance(spec, AsciiHex):
        return 1 + spec.head, 4
    return None


def mutate(rng: random.Random, spec: Any, frame: bytes) -> bytes:
    """One mutated copy of ``frame``: 1-3 operations, then (mostly) length and check fixed up."""
    from bmsbank.native.spec import AsciiHex

    ascii_body = isinstance(spec, AsciiHex) and rng.random() < 0.8
    if ascii_body:  # mutate the bytes the hex digits carry, not the characters
        data = bytearray(bytes.fromhex(frame[1:-5].decode()))
    else:
        data = bytearray(frame)
    resized = False
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        n = len(data)
        if n == 0:
            break
        op = rng.randrange(9)
        pos = rng.randrange(n)
        if op == 0:  # bit flips
            for _ in range(rng.randint(1, 4)):
                p = rng.randrange(n)
                data[p] ^= 1 << rng.randrange(8)
        elif op == 1:  # byte values
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(n)] = rng.choice(INTERESTING) if rng.random() < 0.5 else (
                    rng.randrange(256))  # fmt: skip
        elif op == 2:  # 16-bit extremes (a reading's raw value)
            value = rng.choice((0x0000, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(65536)))
            data[pos : pos + 2] = value.to_bytes(2, "big")[: max(0, n - pos)]
        elif op == 3:  # truncation
            del data[pos:]
            resized = True
        elif op == 4:  # insertion
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            resized = True
        elif op == 5:  # deletion
            del data[pos : pos + rng.randint(1, 16)]
            resized = True
        elif op == 6:  # a span duplicated
            span = data[pos : pos + rng.randint(1, 32)]
            data[pos:pos] = span
            resized = True
        elif op == 7 and not ascii_body:  # the length field set to anything
            where = _length_span(spec)
            if where is not None and where[0] + where[1] <= n:
                at, size = where
                if size == 4:  # ASCII LENGTH: four hex digits
                    data[at : at + 4] = f"{rng.randrange(65536):04X}".encode()
                else:
                    data[at : at + size] = rng.randrange(1 << (8 * size)).to_bytes(size, "big")
        else:  # a run of one byte value (a stuck line inside the frame)
            data[pos : pos + rng.randint(2, 24)] = bytes((rng.choice(INTERESTING),)) * rng.randint(
                2, 24
            )  # fmt: skip
            resized = True
    if ascii_body:
        data = bytearray(frame[:1] + data.hex().upper().encode() + frame[-5:])
    if resized and rng.random() < 0.7:
        fix_length(spec, data)
    if rng.random() < 0.95:
        fix_check(spec, data)
    return bytes(data)


# -- the run ----------------------------------------------------------------------------------
def oracle(state: dict[str, Any], max_current: float) -> str | None:
    """Why an accepted state is outside the pack's plausible range (independent of the product)."""
    cells = state["cells"]
    if len(cells) != CELLS:
        return f"{len(cells)} cells"
    for c in cells:
        if not (isinstance(c, (int, float)) and ORACLE_CELL[0] <= c <= ORACLE_CELL[1]):
            return f"cell {c!r} V"
    total = math.fsum(cells)
    slack = ORACLE_VOLTAGE[0] * total + ORACLE_VOLTAGE[1]
    v = state["voltage"]
    low = total - slack if state["charge_fet"] and state["discharge_fet"] else 0.0
    if not (math.isfinite(v) and low <= v <= total + slack):
        return f"voltage {v!r} V for cells summing {total:.3f} V"
    i = state["current"]
    if not (math.isfinite(i) and abs(i) <= max_current):
        return f"current {i!r} A"
    if not 0.0 <= state["soc"] <= 100.0:
        return f"soc {state['soc']!r}"
    if state["min_cell_voltage"] != min(cells) or state["max_cell_voltage"] != max(cells):
        return "min/max cell not the cells'"
    return None


def run(family: str, count: int, seed: int, digests_path: str | None) -> dict[str, Any]:
    """Run ``count`` trials for ``family`` in this process's implementation; return the figures."""
    from bmsbank import plausibility
    from bmsbank.config import parse
    from bmsbank.errors import FrameError, LinkTimeout, MessageError
    from bmsbank.native import _frames_py
    from bmsbank.native.frames import IMPLEMENTATION
    from bmsbank.schema import pack, validate_state
    from bmsbank.services.poller import plugins, simulators
    from bmsbank.services.poller.plugins.base import LinkStats, run_query
    from bmsbank.services.poller.simulators.battery import BatteryModel
    from bmsbank.state import make_state

    plugin = plugins.load(family)
    address = plugin.default_address
    model = BatteryModel(cells=CELLS, soc=57.0, current=-8.0, imbalance=0.02)
    sim = simulators.create(family, {address: model})
    queries = [q for q in plugin.queries(address) if q.expects_reply]
    clean = {q.request: b"".join(sim.feed(q.request)) for q in queries}
    pyframer = _frames_py.framer(plugin.framing)
    frames = {req: split_frames(pyframer, reply) for req, reply in clean.items()}
    requests = list(frames)
    pid = f"fuzz:{address}"
    cfg = parse({"bank": {"strings": [[pid]], "state_file": "",
                          "packs": {pid: {"cells": CELLS}}}}, "fuzz")  # fmt: skip
    bounds = plausibility.bounds(cfg.bank, cfg.topology())[pid]
    link = Replay(LinkTimeout)

    def cycle() -> dict[str, Any]:
        """The poll cycle's state message from the link's current replies."""
        parts: dict[str, Any] = {}
        stats = LinkStats()
        for q in queries:
            parts[q.part] = run_query(plugin, link, q, address, parts, stats)
        fields = plugin.state(parts)
        msg = make_state("fuzz", address, plugin.name, 7, fields, stats.as_dict(),
                         mono=1.0, wall=1.7e9, epoch=1)  # fmt: skip
        return msg

    link.replies = dict(clean)
    reference = cycle()
    validate_state(reference)
    assert plausibility.implausible(reference, bounds) is None, "the clean cycle is implausible"
    ref_body = {k: v for k, v in reference.items() if k != "link"}

    rng = random.Random(seed)
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    changed_fields: dict[str, int] = {}
    digests = array("I")
    slowest = 0.0

    def note(key: str, example: str | None = None) -> None:
        counts[key] = counts.get(key, 0) + 1
        if example is not None and len(examples.setdefault(key, [])) < 5:
            examples[key].append(example)

    def trial() -> tuple[str, bytes]:
        """One trial's outcome class and the bytes its digest is made of."""
        try:
            msg = cycle()
        except FrameError as exc:
            return "frame:" + exc.kind, f"F{exc.kind}{exc.reason}".encode()
        except LinkTimeout as exc:
            return "link:" + str(exc), f"T{exc}".encode()
        try:
            validate_state(msg)
        except MessageError as exc:
            return "schema", f"M{exc}".encode()
        why = plausibility.implausible(msg, bounds)
        if why is not None:
            return "implausible", f"P{why}".encode()
        wrong = oracle(msg, bounds.max_current)
        if wrong is not None:
            return "ACCEPTED_IMPLAUSIBLE:" + wrong, b"A" + pack(msg)
        body = {k: v for k, v in msg.items() if k != "link"}
        if body == ref_body:
            return "accepted_same", b"S"
        for k, v in body.items():
            if ref_body.get(k) != v:
                changed_fields[k] = changed_fields.get(k, 0) + 1
        return "accepted_changed", b"C" + pack(body)

    for i in range(count):
        req = rng.choice(requests)
        parts = frames[req]
        k = rng.randrange(len(parts))
        if rng.random() < 0.03:  # a whole frame repeated, or one dropped
            mutated = b"".join(parts[: k + 1] + parts[k:]) if rng.random() < 0.5 else b"".join(
                parts[:k] + parts[k + 1 :])  # fmt: skip
        else:
            mutated = b"".join(parts[:k] + [mutate(rng, plugin.framing, parts[k])] + parts[k + 1 :])
        link.replies = dict(clean)
        link.replies[req] = mutated
        start = time.perf_counter()
        try:
            key, digest = trial()
        except Exception as exc:  # noqa: BLE001 - a crash is what this campaign counts
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            key = "CRASH:" + type(exc).__name__
            digest = f"X{type(exc).__name__}".encode()
            note(key, f"trial {i} request {req.hex()} reply {mutated.hex()}: {exc!r} at "
                      f"{tb.filename}:{tb.lineno}")  # fmt: skip
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        if elapsed > HANG_SECONDS:
            again = time.perf_counter()
            try:
                trial()
            except Exception:  # noqa: BLE001, S110 - counted above
                pass
            if time.perf_counter() - again > HANG_SECONDS:
                note("HANG", f"trial {i} request {req.hex()} reply {mutated.hex()}")
            else:
                note("slow_once")
        if key.startswith("ACCEPTED_IMPLAUSIBLE"):
            note("ACCEPTED_IMPLAUSIBLE", f"{key}: request {req.hex()} reply {mutated.hex()}")
        elif not key.startswith("CRASH"):
            note(key)
        digests.append(zlib.crc32(digest))
    if digests_path:
        with open(digests_path, "wb") as fh:
            digests.tofile(fh)
    return {"family": family, "impl": IMPLEMENTATION, "trials": count, "counts": counts,
            "examples": examples, "changed_fields": changed_fields,
            "slowest_ms": slowest * 1000}  # fmt: skip


def main(argv: list[str]) -> int:
    """Child entry: ``fault_fuzz.py FAMILY COUNT SEED DIGESTS`` prints the figures as JSON."""
    import json

    family, count, seed, path = argv[0], int(argv[1]), int(argv[2]), argv[3]
    print(json.dumps(run(family, count, seed, path or None)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
