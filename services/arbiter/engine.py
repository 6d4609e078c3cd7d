"""The bank engine as the arbiter, the limits CLI and the plant use it.

``BankEngine`` ties the pack registry (validation, freshness, counters) to the native limits engine
(:mod:`bmsbank.native.limits`) and turns the engine's reason tuples into text. Time is whatever the
caller passes: the arbiter's monotonic clock, or the ``t`` of a JSON line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from bmsbank import config as configuration
from bmsbank import plausibility
from bmsbank.config import BankConfig
from bmsbank.native import limits
from bmsbank.services.arbiter.cell_health import CellHealth, Settings
from bmsbank.services.arbiter.reasons import Explainer
from bmsbank.services.arbiter.registry import Debounce, PackEntry, PackRegistry
from bmsbank.topology import Topology, engine_params

NAN = float("nan")


def finite(x: float) -> float | None:
    """``x``, or None when it is NaN or infinite (unknown, not zero)."""
    return x if math.isfinite(x) else None


class BankEngine:
    """One bank: latest state per pack, and the limits computed from them."""

    def __init__(
        self,
        bank: BankConfig,
        topo: Topology,
        wall_clock: bool = True,
        families: Mapping[str, str] | None = None,
    ) -> None:
        """Build the engine for ``bank`` wired as ``topo``.

        ``wall_clock``: compare a reading's unix time with this machine's clock (the arbiter);
        False where time is the input's (``bmsbank limits``, the plant). ``families``: pack id ->
        the BMS family of its port (the arbiter's; a state of another family is refused).
        """
        self.bank = bank
        self.topo = topo
        params = engine_params(bank, topo)
        debounce = Debounce(
            limits.PackRules(params).evaluate, bank.cell_charge_voltage, bank.confirm_states
        )
        self.registry = PackRegistry(
            list(topo.ids), bank.stale_after, plausibility.bounds(bank, topo, families), debounce,
            wall=time.time if wall_clock else None,
        )  # fmt: skip
        self.native = limits.Engine(params, topo.strings, topo.cells, topo.capacities)
        self.explain = Explainer(bank, topo.ids)
        self.entries = [self.registry.packs[pid] for pid in topo.ids]
        self.ticks = 0  #: engine cycles run
        #: what is learnt of the cells from the accepted states (never read by the limits)
        self.cells: CellHealth | None = None
        if bank.cell_health:
            settings = Settings(bank.cell_charge_voltage, bank.cell_step,
                                bank.weak_cell_resistance, bank.weak_cell_capacity)  # fmt: skip
            self.cells = CellHealth(dict(zip(topo.ids, topo.capacities, strict=True)), settings)

    @classmethod
    def from_mapping(
        cls, bank: Mapping[str, Any], source: str = "<engine>", wall_clock: bool = False
    ) -> BankEngine:
        """An engine from a ``[bank]`` table (keys as in the config file).

        Raises:
            ConfigError: a key is unknown or invalid.

        """
        config = configuration.parse({"bank": dict(bank)}, source)
        return cls(config.bank, config.topology(), wall_clock)

    def accept(self, msg: Any, t: float) -> bool:
        """Take one pack state received at engine time ``t`` [s]; False when it was rejected.

        True also for a state held until the next confirms it (see ``[bank] confirm_states``).
        """
        held = self.registry.held
        return self.take(msg, t) is not None or self.registry.held > held

    def take(self, msg: Any, t: float) -> PackEntry | None:
        """Accept one pack state as :meth:`accept`; its entry when it acts, else None.

        An acting state also goes to the cell-health estimator.
        """
        entry = self.registry.accept(msg, t)
        if entry is not None and entry.state is not None and self.cells is not None:
            self.cells.observe(entry.state)
        return entry

    def tick(self, t: float) -> dict[str, Any]:
        """Run the engine at time ``t`` [s]; the raw result (numbers, NaN, reason tuples)."""
        self.registry.refresh(t)
        states = [e.state for e in self.entries]
        seen = [NAN if e.seen is None else e.seen for e in self.entries]
        self.ticks += 1
        return self.native.step(t, states, seen)

    def snapshot(self) -> dict[str, Any]:
        """What must survive a restart (call after at least one :meth:`tick`)."""
        return self.native.snapshot()

    def restore(self, t: float, snap: Mapping[str, Any]) -> None:
        """Take back a :meth:`snapshot` (ages counted back from engine time ``t``)."""
        self.native.restore(t, snap)

    def reasons(self, out: Mapping[str, Any]) -> dict[str, str]:
        """The reasons of a :meth:`tick` result, in words."""
        why = out["reasons"]
        return {
            "cvl": self.explain.voltage(why["cvl"], out["charge_state"], out["cells"]),
            "ccl": self.explain.current(why["ccl"], "charge", why["ccl_cut"]),
            "dcl": self.explain.current(why["dcl"], "discharge", why["dcl_cut"]),
        }

    def pack_reasons(self, row: list) -> tuple[str, str]:
        """Why one pack (a row of ``out["packs"]``) allows its CCL and DCL."""
        return self.explain.current(row[3], "charge"), self.explain.current(row[5], "discharge")

    def cell_id(self, out: Mapping[str, Any], which: str) -> str | None:
        """Id "port:addr C5" of the highest (``which`` = "max") or lowest cell, or None."""
        k = out[f"{which}_cell_pack"]
        return f"{self.topo.ids[k]} C{out[f'{which}_cell_index'] + 1}" if k >= 0 else None

    def sensor_id(self, out: Mapping[str, Any], which: str) -> str | None:
        """Id "port:addr T2" of the hottest (``which`` = "max") or coldest sensor, or None."""
        k = out[f"{which}_temperature_pack"]
        return f"{self.topo.ids[k]} T{out[f'{which}_temperature_index'] + 1}" if k >= 0 else None

    def summary(self, out: Mapping[str, Any]) -> dict[str, Any]:
        """The result as plain JSON-able values: None for unknowns, reasons in words."""
        return {
            "t": out["t"],
            "cvl": out["cvl"],
            "ccl": out["ccl"],
            "dcl": out["dcl"],
            "charge_state": out["charge_state"],
            "online": out["online"],
            "offline": out["offline"],
            "waiting": out["waiting"],
            "blocking_charge": out["blocking_charge"],
            "blocking_discharge": out["blocking_discharge"],
            "soc": finite(out["soc"]),
            "voltage": finite(out["voltage"]),
            "current": finite(out["current"]),
            "max_cell_voltage": finite(out["max_cell_voltage"]),
            "max_cell_id": self.cell_id(out, "max"),
            "min_cell_voltage": finite(out["min_cell_voltage"]),
            "min_cell_id": self.cell_id(out, "min"),
            "days_since_full": days(out["since_full"]),
            "full_charge_due": out["full_due"],
            "time_to_go": finite(out["time_to_go"]),
            "reasons": self.reasons(out),
        }


def days(seconds: float) -> float | None:
    """Seconds as days, or None when unknown."""
    return None if not math.isfinite(seconds) else seconds / 86400.0
