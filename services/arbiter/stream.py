"""``bmsbank limits``: the bank engine on JSON lines, with time taken only from the input.

Input, one JSON object per line (format and examples: ``docs/LIMITS.md``):

- ``{"t": 0, "config": {...}}``: the ``[bank]`` table (same keys as the config file); optional and
  only before the first pack or tick line. Without it every pack that reports before the first
  tick is a parallel string of its own and everything else takes its default.
- ``{"t": 1.5, "pack": "ttyUSB0:1", "state": {...}}``: one pack's state, with the fields and units
  of a state message; ``cells`` and ``soc`` are required, the rest has defaults (see the doc).
- ``{"t": 2, "tick": true}``: run the engine at ``t``; writes one output line.

``t`` [s] never goes backwards. A line that cannot be used gets an ``{"error": ...}`` line in the
output and is skipped; the run goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, TextIO

from bmsbank.errors import ConfigError
from bmsbank.schema import is_pack_id
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.state import make_state

DIGITS = 6  # output rounding: enough for mV and mA, stable text for diffs


class LineError(ValueError):
    """An input line that cannot be used."""


class BadConfig(LineError):
    """The config line is invalid: nothing after it would mean what its author meant."""


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, DIGITS) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


class LimitsStream:
    """Reads input lines, drives one :class:`BankEngine`, writes output lines."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.config: dict[str, Any] | None = None
        self.engine: BankEngine | None = None
        self.pending: list[tuple[float, str, dict[str, Any]]] = []  #: states before the engine
        self.t = -math.inf
        self.seq = 0
        self.errors = 0
        self.stopped = False  #: a bad config line ended the run

    def feed(self, number: int, line: str) -> None:
        """Handle one input line (``number`` counts from 1, for error messages)."""
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except ValueError as exc:
            msg = LineError(f"not JSON: {exc}")
        try:
            if isinstance(msg, LineError):
                raise msg
            self._handle(msg)
        except LineError as exc:
            self.errors += 1
            self.stopped = isinstance(exc, BadConfig)
            self._write({"line": number, "error": str(exc)})

    def _handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise LineError("expected a JSON object")
        t = msg.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise LineError(f"t: expected a finite number of seconds, got {t!r}")
        if t < self.t:
            raise LineError(f"t: {t} is earlier than the previous line's {self.t}")
        if "config" in msg:
            self._configure(msg["config"])
        elif "pack" in msg:
            self._state(float(t), msg.get("pack"), msg.get("state"))
        elif msg.get("tick") is True:
            self._tick(float(t))
        else:
            raise LineError('expected one of "config", "pack" + "state", or "tick": true')
        self.t = float(t)

    def _configure(self, config: Any) -> None:
        if self.engine is not None or self.pending:
            raise LineError("config: only before the first pack or tick line")
        if not isinstance(config, dict):
            raise BadConfig("config: expected an object with the keys of the [bank] table")
        try:
            engine = BankEngine.from_mapping(config, "config line")
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None
        self.config, self.engine = config, engine

    def _state(self, t: float, pid: Any, fields: Any) -> None:
        if not is_pack_id(pid) or pid != f"{pid.rpartition(':')[0]}:{int(pid.rpartition(':')[2])}":
            raise LineError(f"pack: expected port:address such as 'ttyUSB0:1', got {pid!r}")
        if not isinstance(fields, dict):
            raise LineError("state: expected an object")
        if self.engine is None and self.config is None:
            self.pending.append((t, pid, fields))  # the bank is every pack seen before a tick
            return
        self._accept(t, pid, fields)

    def _accept(self, t: float, pid: str, fields: dict[str, Any]) -> None:
        assert self.engine is not None
        msg = self._message(pid, fields)
        if pid not in self.engine.topo.ids:
            raise LineError(f"pack: {pid!r} is not in the bank ({', '.join(self.engine.topo.ids)})")
        if not self.engine.accept(msg, t):
            raise LineError(f"state of {pid} rejected: {self.engine.registry.last_rejection}")

    def _message(self, pid: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A complete state message from the fields given, with the documented defaults."""
        for key in ("cells", "soc"):
            if key not in fields:
                raise LineError(f"state.{key}: required")
        cells = fields["cells"]
        if not isinstance(cells, list):
            raise LineError("state.cells: expected a list of volts")
        declared = (self.config or {}).get("packs", {}).get(pid, {})
        capacity = fields.get("capacity", declared.get("capacity", 0.0))
        soc = fields["soc"]
        body = {
            "voltage": sum(c for c in cells if isinstance(c, (int, float))),
            "current": 0.0,
            "capacity": capacity,
            "remaining": soc * capacity / 100.0 if _numbers(soc, capacity) else 0.0,
            "balancing": [0] * len(cells),
            "temperatures": [],
            "charge_fet": True,
            "discharge_fet": True,
            **fields,
        }
        port, _, address = pid.rpartition(":")
        self.seq += 1
        return make_state(port, int(address), "stream", self.seq, body, {}, mono=0.0, wall=0.0)

    def _tick(self, t: float) -> None:
        if self.engine is None:
            ids = list(dict.fromkeys(pid for _, pid, _ in self.pending))
            self.config = {"strings": [[pid] for pid in ids]}
            self.engine = BankEngine.from_mapping(self.config, "packs seen before the first tick")
            pending, self.pending = self.pending, []
            for when, pid, fields in pending:
                try:
                    self._accept(when, pid, fields)
                except LineError as exc:
                    self.errors += 1
                    self._write({"t": when, "error": str(exc)})
        out = self.engine.tick(t)
        line = self.engine.summary(out)
        line["rejected"] = self.engine.registry.counters.rejected
        self._write(line)

    def _write(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(_round(obj), ensure_ascii=False) + "\n")
        self.out.flush()


def _numbers(*xs: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)


def run(lines: Iterable[str], out: TextIO) -> int:
    """Run a whole input: 0 when every line was used, 1 when some were not, 2 on a bad config."""
    stream = LimitsStream(out)
    for number, line in enumerate(lines, 1):
        stream.feed(number, line)
        if stream.stopped:
            return 2
    return 1 if stream.errors else 0
