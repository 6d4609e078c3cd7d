"""``bmsbank replay``: recorded states through the arbiter's engine, compared with its banks.

The arbiter (:mod:`bmsbank.services.arbiter.service`) takes the states queued since its last
tick, then computes and publishes the bank at its monotonic time ``now``; the tap carries those
states just before that bank, and the bank carries ``now`` as ``mono``. The replay does the
same with the same code (:class:`BankEngine` and :class:`BankComputer`): each recorded bank's
states are accepted at the bank's ``mono`` and the engine ticks at ``mono``, as fast as it can.
What the tap does not carry is rebuilt from the banks:

- when each pack's last state arrived (it matters for ``stale_after``): states taken while the
  arbiter gathers at start-up arrive between ticks, and a state held for confirmation
  (``confirm_states``) refreshes its pack without being published; each bank's per-pack
  ``age`` gives it back exactly (``mono - age``);
- confirmation: only states that acted reach the tap, so the replay takes each at once;
- a recording that starts with the arbiter already running (first bank ``seq`` > 1): the days
  since each pack's last full charge come from the first bank; the engine's other memory (charge
  state, hold and ramp timers) is unknown, so banks may differ until it has settled; a restart
  of the arbiter inside the recording (``seq`` falls) starts a new engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bmsbank import config as configuration
from bmsbank import topology
from bmsbank.errors import MessageError
from bmsbank.recording import BANK, Record
from bmsbank.schema import unpack
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine

COMPARED = ("cvl", "ccl", "dcl", "charge_state")  #: the bank fields a replay must reproduce


@dataclass
class Setup:
    """What the engine is built from: a recording's header, or a config file."""

    bank: Any  #: BankConfig
    packs: list[str]
    families: dict[str, str]
    name: str
    source: str

    @classmethod
    def from_header(cls, header: Mapping[str, Any], source: str) -> Setup:
        """From a recording's header (raises ConfigError naming the key and the file)."""
        bank = header.get("bank")
        parsed = configuration.parse({"bank": bank if isinstance(bank, dict) else {}}, source)
        packs = [p for p in header.get("packs") or [] if isinstance(p, str)]
        families = header.get("families")
        return cls(parsed.bank, packs, families if isinstance(families, dict) else {},
                   str(header.get("name", parsed.bank.name)), source)  # fmt: skip

    @classmethod
    def from_config(cls, path: str) -> Setup:
        """From a config file (``--config``: what another config would have done)."""
        config = configuration.load(path)
        header: dict[str, Any] = {"families": {f"{p.name}:{a}": "" if p.bms == configuration.AUTO
                                               else p.bms for p in config.ports
                                               for a in p.addresses}}  # fmt: skip
        return cls(config.bank, config.pack_ids(), header["families"], config.bank.name, path)

    def engine(self) -> BankEngine:
        """A fresh engine as the arbiter builds it, minus its wall clock and its confirmation."""
        topo = topology.build(self.bank, self.packs, self.source)
        engine = BankEngine(self.bank, topo, wall_clock=False, families=self.families)
        engine.registry.debounce = None  # the tap carries only states that acted
        return engine


@dataclass
class Result:
    """One recorded bank and its replay."""

    seq: int
    mono: float
    recorded: dict[str, Any]
    replayed: dict[str, Any]
    differs: list[str] = field(default_factory=list)  #: the fields of COMPARED that differ


class Replay:
    """Feeds records in order; yields a :class:`Result` per recorded bank."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.computer: BankComputer | None = None
        self.pending: list[dict[str, Any]] = []
        self.last_seq = 0
        self.last_mono = -math.inf
        self.restarts = 0  #: arbiter restarts seen (a new engine each)
        self.bad = 0  #: records that could not be used
        self.rejected = 0  #: recorded states the replay's registry refused
        self.problems: list[str] = []

    def run(self, records: Iterable[Record]) -> Iterator[Result]:
        """Every recorded bank, replayed."""
        for rec in records:
            try:
                msg = unpack(rec.body)
            except MessageError as exc:
                self._bad(f"record at {rec.received:.3f}: {exc}")
                continue
            if rec.kind != BANK:
                if isinstance(msg, dict):
                    self.pending.append(msg)
                continue
            result = self._bank(msg, rec.received)
            if result is not None:
                yield result

    def _bad(self, why: str) -> None:
        self.bad += 1
        if len(self.problems) < 20:  # bounded: one line per kind of damage is enough
            self.problems.append(why)

    def _bank(self, msg: Any, received: float) -> Result | None:
        mono, seq = (msg.get("mono"), msg.get("seq")) if isinstance(msg, dict) else (None, None)
        if not isinstance(mono, float) or not isinstance(seq, int) or not math.isfinite(mono):
            self._bad(f"bank received at {received:.3f}: no mono/seq")
            return None
        if self.computer is None or seq <= self.last_seq or mono < self.last_mono:
            self._start(msg, mono, seq)
        assert self.computer is not None
        engine = self.computer.engine
        for state in self.pending:
            if not engine.accept(state, mono):
                self.rejected += 1
        self.pending.clear()
        ages = {p.get("id"): p.get("age") for p in msg.get("packs") or [] if isinstance(p, dict)}
        for entry in engine.entries:
            age = ages.get(entry.pack)
            if entry.state is not None and isinstance(age, float):
                entry.seen = mono - age  # exact: mono - (mono - seen) when seen > mono / 2
        replayed = self.computer.compute(mono)
        self.last_seq, self.last_mono = seq, mono
        differs = [k for k in COMPARED if msg.get(k) != replayed[k]]
        return Result(seq, mono, msg, replayed, differs)

    def _start(self, msg: Mapping[str, Any], mono: float, seq: int) -> None:
        """A new engine: at the start, or after the arbiter restarted."""
        if self.computer is not None:
            self.restarts += 1
        engine = self.setup.engine()
        self.computer = BankComputer(engine, self.setup.name, mono)
        if seq > 1:  # joined a running arbiter: its days since full charge from this bank
            days = {p.get("id"): p.get("days_since_full") for p in msg.get("packs") or []
                    if isinstance(p, dict)}  # fmt: skip
            ages = [_age(days.get(pid)) for pid in engine.topo.ids]
            try:
                engine.restore(mono, {"since_full": ages, "since_reset": None, "soc": None})
            except ValueError as exc:
                self._bad(f"bank {seq}: days since full charge not usable: {exc}")


def _age(days: Any) -> float | None:
    """Days as seconds, or None when not a usable number."""
    if isinstance(days, (int, float)) and math.isfinite(days) and days >= 0:
        return float(days) * 86400.0
    return None
