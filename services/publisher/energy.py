"""Energy in / out of the bank for CAN frame 0x378, kept across restarts.

:class:`EnergyCounter` integrates bank power (voltage x current, + = charge) over the bank
messages' own clock (``mono``, the arbiter's monotonic seconds), so the publisher's timing never
matters. Between two banks the power is taken as a straight line (trapezoid); when it changes
sign the interval is split where the line crosses zero, so charge never cancels discharge.
Nothing is integrated

* over a gap longer than ``max_gap`` seconds (a stalled arbiter, a restart): the power during
  that time is not known, and guessing would invent energy;
* when the voltage, the current or ``mono`` of either end is unknown (the publisher's safe bank
  carries none), or when ``mono`` went backwards (the arbiter restarted).

The counters are kept in Wh as floats, so nothing is lost between the 100 Wh steps of 0x378,
and roll over to zero at 2**32 x 100 Wh like the frame's un32 fields (:data:`ROLLOVER_WH`).

:class:`EnergyFile` keeps them in a small JSON file ("" = not kept): written atomically
(temporary file + rename). Loading checks every field (two numbers from 0 to the rollover, the
file version when present); a file that fails, or cannot be read at all, is logged as one
warning and counting starts from 0 (the seed: "an acceptable compromise is to restart at zero";
VRM handles a counter reset).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from bmsbank.persisted import CorruptFile, number, read_json

from .canbms import ENERGY_UNITS, ENERGY_WH

log = logging.getLogger(__name__)

ROLLOVER_WH = ENERGY_UNITS * ENERGY_WH  #: both counters restart at 0 Wh here
MAX_GAP = 5.0  #: s; default longest interval between two banks that is integrated
FILE_VERSION = 1


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class EnergyCounter:
    """Energy into (charge) and out of (discharge) the bank [Wh], from its bank messages."""

    def __init__(self, energy_in: float = 0.0, energy_out: float = 0.0, max_gap: float = MAX_GAP):
        """Start from the given totals [Wh]; ``max_gap`` [s] is the longest interval integrated."""
        self.energy_in = energy_in % ROLLOVER_WH  #: Wh charged, fractions kept
        self.energy_out = energy_out % ROLLOVER_WH  #: Wh discharged, fractions kept
        self.max_gap = max_gap
        self._last: tuple[float, float] | None = None  # (mono [s], power [W]) of the last bank
        self.skipped = 0  #: intervals not integrated (gap, unknown value, clock went back)

    @property
    def totals(self) -> tuple[float, float]:
        """(energy in, energy out) [Wh]."""
        return self.energy_in, self.energy_out

    def add(self, bank: Mapping[str, Any]) -> None:
        """Integrate up to this bank message (``mono`` [s], ``voltage`` [V], ``current`` [A])."""
        mono = _finite(bank.get("mono"))
        voltage, current = _finite(bank.get("voltage")), _finite(bank.get("current"))
        if mono is None or voltage is None or current is None:
            if self._last is not None:
                self.skipped += 1
            self._last = None
            return
        power = voltage * current
        last, self._last = self._last, (mono, power)
        if last is None:
            return
        dt = mono - last[0]
        if dt == 0.0:  # the same bank again: nothing has passed
            self._last = last
            return
        if not 0.0 < dt <= self.max_gap:
            self.skipped += 1
            return
        charged, discharged = _trapezoid(last[1], power, dt)
        self.energy_in = (self.energy_in + charged) % ROLLOVER_WH
        self.energy_out = (self.energy_out + discharged) % ROLLOVER_WH


def _trapezoid(p0: float, p1: float, dt: float) -> tuple[float, float]:
    """(charged, discharged) [Wh] for power moving linearly from p0 to p1 [W] over dt [s]."""
    if p0 >= 0.0 and p1 >= 0.0:
        return (p0 + p1) / 2 * dt / 3600.0, 0.0
    if p0 <= 0.0 and p1 <= 0.0:
        return 0.0, -(p0 + p1) / 2 * dt / 3600.0
    cross = dt * p0 / (p0 - p1)  # where the line crosses zero
    first = p0 / 2 * cross / 3600.0
    second = p1 / 2 * (dt - cross) / 3600.0
    return (first, -second) if p0 > 0.0 else (second, -first)


class EnergyFile:
    """One JSON file at ``path`` ("" = keep nothing) holding the two counters."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.warned = False

    def load(self) -> tuple[float, float]:
        """The saved (energy in, energy out) [Wh]; (0, 0) when there is none or it is unreadable."""
        try:
            data = read_json(self.path)
            if data is None:
                return 0.0, 0.0
            version = data.get("v", FILE_VERSION)
            if type(version) is not int or version != FILE_VERSION:  # not True, not 1.0
                raise CorruptFile(f"v: {str(version)[:16]}, expected {FILE_VERSION}")
            energy_in = number(data.get("energy_in_wh"), "energy_in_wh", 0.0, ROLLOVER_WH)
            energy_out = number(data.get("energy_out_wh"), "energy_out_wh", 0.0, ROLLOVER_WH)
        except CorruptFile as exc:
            log.warning("energy file %s unreadable, counting from 0: %s", self.path, exc)
            return 0.0, 0.0
        return energy_in, energy_out

    def save(self, totals: tuple[float, float]) -> bool:
        """Write (energy in, energy out) [Wh] atomically; log once and carry on when it cannot.

        Returns:
            True when the file was written (False when not kept or on error).

        """
        if not self.path:
            return False
        tmp = f"{self.path}.tmp"
        body = {"v": FILE_VERSION, "saved": time.time(),
                "energy_in_wh": totals[0], "energy_out_wh": totals[1]}  # fmt: skip
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(body, fh)
                fh.flush()
                os.fsync(fh.fileno())  # the rename must never publish an empty file
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self.warned:
                log.warning("cannot write energy file %s: %s", self.path, exc)
                self.warned = True
            return False
        if self.warned:
            log.info("energy file %s written again", self.path)
            self.warned = False
        return True
