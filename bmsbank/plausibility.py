"""Is a state physically possible for the pack that claims it?

The schema (:mod:`bmsbank.schema`) bounds every reading by physics in general (a cell 0-6 V, a
pack up to 1000 V). This module bounds it by the pack: its chemistry, its cell count and the
currents the bank allows it. Why both: these BMSs check their frames with plain sums, so a
corrupted reply passes its checksum more often than one thinks (a fuzz campaign of issue 11
accepted 262 JBD states per million mutated replies with a cell outside 0-5 V, and 89 JK states
with more than 2,000 A), and one such state made a bank of 526 V or 10,004 A.

Checked in the poller before a state is sent and again in the arbiter (a peer process is not
trusted). A state that fails is rejected and counted under the reason's first word; while a pack
sends nothing plausible it goes offline after ``stale_after`` like a silent one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bmsbank.config import BankConfig
    from bmsbank.topology import Topology


@dataclass(frozen=True)
class Chemistry:
    """What a cell of one chemistry can read [V] and still be a cell.

    Wider than any protection threshold on purpose: a cell that is really over-charged or
    over-discharged must reach the limits. Outside these a reading is a broken sense wire or a
    corrupt frame, not a cell.
    """

    cell_low: float
    cell_high: float


#: LiFePO4: 2.5-3.65 V in use; a cell below 1 V is destroyed and above 4.5 V electrolyte breaks
#: down (a reading beyond is not a cell)
CHEMISTRIES: dict[str, Chemistry] = {"LiFePO4": Chemistry(cell_low=1.0, cell_high=4.5)}

#: how far the pack voltage may be from the sum of its cells: a fraction of the sum plus volts
#: (wiring and shunt drops under load, two ADCs of one BMS)
VOLTAGE_TOLERANCE = (0.05, 1.0)
#: the largest current a pack may report: times its largest configured limit, plus amperes
#: (inverter surges exceed the limits we ask for; 2,000 A from a 100 A pack does not happen)
CURRENT_MARGIN = (3.0, 50.0)


#: a reported capacity may be this many times the configured one, or its inverse (a BMS set up
#: with the nominal capacity, a user with the measured one); no single pack holds more Ah
CAPACITY_FACTOR = 4.0
MAX_CAPACITY = 5000.0  # Ah


@dataclass(frozen=True)
class PackBounds:
    """The plausible range of one pack's readings."""

    cells: int  #: cells in series (0 = as the pack reports)
    cell_low: float  #: V
    cell_high: float  #: V
    max_current: float  #: A, either direction
    capacity: float = 0.0  #: Ah configured (0 = as the pack reports)
    bms: str = ""  #: the family configured for its port ("" = any: a remote or stream pack)


def bounds(
    bank: BankConfig, topo: Topology, families: Mapping[str, str] | None = None
) -> dict[str, PackBounds]:
    """Each pack's bounds from the bank's chemistry and the pack's declared limits.

    ``families``: pack id -> the BMS family configured for its port (a state from another
    family is not this pack's).
    """
    chem = CHEMISTRIES[bank.chemistry]
    factor, extra = CURRENT_MARGIN
    return {
        pid: PackBounds(
            cells=topo.cells[k],
            cell_low=chem.cell_low,
            cell_high=chem.cell_high,
            max_current=factor * max(topo.max_charge[k], topo.max_discharge[k]) + extra,
            capacity=topo.capacities[k],
            bms=(families or {}).get(pid, ""),
        )
        for k, pid in enumerate(topo.ids)
    }


def default_bounds(chemistry: str = "LiFePO4") -> PackBounds:
    """Bounds for a pack nothing is declared about (``bmsbank decode``): the bank's defaults."""
    from bmsbank.config import BankConfig

    chem = CHEMISTRIES[chemistry]
    top = max(BankConfig.max_charge_current, BankConfig.max_discharge_current)
    return PackBounds(0, chem.cell_low, chem.cell_high, CURRENT_MARGIN[0] * top + CURRENT_MARGIN[1])


def implausible(state: Mapping[str, Any], b: PackBounds) -> str | None:
    """Why ``state`` (valid by the schema) cannot be this pack's reading, or None when it can.

    The reason starts with the field's name, as the schema's do.
    """
    if b.bms and state["bms"] != b.bms:
        return f"bms: {state['bms']!r} reported, {b.bms!r} configured for its port"
    cells = state["cells"]
    if b.cells and len(cells) != b.cells:
        return f"cells: {len(cells)} reported, {b.cells} configured"
    low, high = state["min_cell_voltage"], state["max_cell_voltage"]
    if low < b.cell_low or high > b.cell_high:
        bad = low if low < b.cell_low else high
        return f"cells: {bad:g} V is not a cell (plausible {b.cell_low:g}-{b.cell_high:g} V)"
    total = sum(cells)
    voltage = state["voltage"]
    tolerance = VOLTAGE_TOLERANCE[0] * total + VOLTAGE_TOLERANCE[1]
    # With a FET off a BMS that measures at its terminals may read less, never more.
    floor = total - tolerance if state["charge_fet"] and state["discharge_fet"] else 0.0
    if not floor <= voltage <= total + tolerance:
        return f"voltage: {voltage:g} V disagrees with its {len(cells)} cells' sum {total:.2f} V"
    if abs(state["current"]) > b.max_current:
        current = state["current"]
        return f"current: {current:g} A is beyond what this pack carries ({b.max_current:g} A)"
    capacity = state["capacity"]
    low, high = (b.capacity / CAPACITY_FACTOR, b.capacity * CAPACITY_FACTOR) if b.capacity else (
        0.0, MAX_CAPACITY)  # fmt: skip
    if not low <= capacity <= high:
        return f"capacity: {capacity:g} Ah (plausible {low:g}-{high:g} Ah)"
    cvl = state["bms_cvl"]
    if cvl is not None and cvl > len(cells) * b.cell_high:
        return f"bms_cvl: {cvl:g} V for {len(cells)} cells"
    return None
