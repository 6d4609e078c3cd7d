"""Limit policies: small functions, each with its inputs and outputs, run in a fixed order.

The order (see :func:`bmsbank.services.arbiter.bank.compute`): blocking -> charge voltage ->
current limits -> alarms. Each returns its value together with the reason for it. Numerical kernels
come from ``bmsbank.native.limits`` (compiled, with a pure-Python twin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.config import BankConfig
from bmsbank.native.limits import step_factor
from bmsbank.schema import ALARM, ALARMS, OK

#: alarms that mean a pack cannot take charge / cannot deliver
CHARGE_BLOCKING = (
    "high_voltage", "high_cell_voltage", "high_charge_temperature", "low_charge_temperature",
    "high_charge_current", "short_circuit", "internal_failure",
)  # fmt: skip
DISCHARGE_BLOCKING = (
    "low_voltage", "low_cell_voltage", "high_temperature", "low_temperature",
    "high_discharge_current", "short_circuit", "internal_failure",
)  # fmt: skip


def blocking(state: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Why a pack blocks charge and discharge (None when it does not)."""
    alarms = state["alarms"]

    def why(fet: str, names: Sequence[str]) -> str | None:
        if not state[fet]:
            return f"{fet.replace('_', ' ')} off"
        active = [n for n in names if alarms.get(n, OK) >= ALARM]
        return ", ".join(n.replace("_", " ") for n in active) or None

    return why("charge_fet", CHARGE_BLOCKING), why("discharge_fet", DISCHARGE_BLOCKING)


def charge_voltage(cfg: BankConfig, cells: int) -> tuple[float, float, str]:
    """CVL [V], battery-low voltage [V] and the reason, for ``cells`` in series."""
    if cells <= 0:
        return 0.0, 0.0, "no pack has reported its cells yet"
    cvl = cells * cfg.cell_charge_voltage
    return cvl, cells * cfg.cell_low_voltage, f"{cells} cells x {cfg.cell_charge_voltage:.3f} V"


def current_limits(
    cfg: BankConfig,
    online: int,
    max_cell: tuple[float, str],
    min_cell: tuple[float, str],
    block_charge: str | None,
    block_discharge: str | None,
) -> tuple[float, float, str, str]:
    """CCL and DCL [A] with reasons.

    Args:
        cfg: bank config (per-pack maxima and cell-voltage step tables).
        online: packs online.
        max_cell: (highest cell voltage [V], "pack cell" id).
        min_cell: (lowest cell voltage [V], "pack cell" id).
        block_charge: why some pack blocks charge, or None.
        block_discharge: why some pack blocks discharge, or None.

    """
    if online == 0:
        return 0.0, 0.0, "no pack online", "no pack online"
    ccl = cfg.max_charge_current * online
    dcl = cfg.max_discharge_current * online
    ccl_why = f"{online} pack(s) x {cfg.max_charge_current:g} A"
    dcl_why = f"{online} pack(s) x {cfg.max_discharge_current:g} A"
    factor, row = step_factor(max_cell[0], cfg.ccl_cell_steps, True)
    if row >= 0:
        ccl *= factor
        ccl_why = (
            f"{max_cell[1]} at {max_cell[0]:.3f} V >= {cfg.ccl_cell_steps[row][0]:.3f} V: "
            f"{factor:.0%} of {ccl_why}"
        )
    factor, row = step_factor(min_cell[0], cfg.dcl_cell_steps, False)
    if row >= 0:
        dcl *= factor
        dcl_why = (
            f"{min_cell[1]} at {min_cell[0]:.3f} V <= {cfg.dcl_cell_steps[row][0]:.3f} V: "
            f"{factor:.0%} of {dcl_why}"
        )
    if block_charge:
        ccl, ccl_why = 0.0, f"blocked: {block_charge}"
    if block_discharge:
        dcl, dcl_why = 0.0, f"blocked: {block_discharge}"
    return ccl, dcl, ccl_why, dcl_why


def bank_alarms(states: Sequence[Mapping[str, Any]], cable_fault: bool) -> dict[str, int]:
    """Worst level of each alarm over the online packs; bms_cable when a pack is unseen."""
    out = dict.fromkeys(ALARMS, OK)
    for state in states:
        for name, level in state["alarms"].items():
            if level > out[name]:
                out[name] = level
    if cable_fault:
        out["bms_cable"] = ALARM
    return out
