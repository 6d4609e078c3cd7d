"""What the CAN-bus BMS port sends, and when: frame rates, force charge, energy, stale data.

:class:`CanOutput` is pure bookkeeping driven by the publisher: :meth:`CanOutput.update` takes
each bank message (real or the safe one), :meth:`CanOutput.due` is asked at each CAN cycle which
frames to send now, and :meth:`CanOutput.last_sent` tells when 0x351 went, from which the
publisher sets the next cycle's deadline. Time is always passed in (the publisher's monotonic
clock); nothing here reads a clock or touches the bus (:class:`~.can_sender.CanSender` does).

Rates (seed 004 states only one: 0x351 at least every 3 s, advised every second):

* every tick (1 s): 0x351, the measurements 0x355 0x356 0x35A 0x372 0x373 0x374-0x377 and the
  force-charge request 0x360;
* every :data:`SLOW_PERIOD` (10 s): what rarely changes, 0x35E 0x35F 0x370 0x371 0x378 0x379
  0x380 0x381 0x382, and at the next tick whenever its content changes (a pack going offline
  changes the online capacity in 0x35F at once). 0x370/0x371 and 0x380/0x381 always go out
  as pairs, the first one first (the seed: the serial number is complete with 0x381).

After a failed send (:meth:`CanOutput.resend_all`) and when sending resumes after stale data,
every frame is due at once, so a GX that just saw the bus come back learns everything within
one tick.

Stale bank data (``can.on_stale``): "safe" keeps sending the publisher's safe bank (CCL = DCL = 0,
last CVL, BMS-cable alarm) at the usual rates; "silent" sends nothing at all until a valid bank
arrives, so the GX sees the battery vanish and stops charge and discharge itself 3 s after the
last 0x351. Every frame stops, not only 0x351: the GX takes 0x35A as "a battery is connected",
and a battery that announces itself without limits would only confuse it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from bmsbank.config import CanConfig

from . import canbms
from .energy import MAX_GAP, EnergyCounter, EnergyFile

log = logging.getLogger(__name__)

LIMITS_ID = 0x351  #: CVL, CCL, DCL: the frame the GX must see at least every 3 s
FAST_PERIOD = 1.0  #: s; 0x351 and the measurements
SLOW_PERIOD = 10.0  #: s; identity, capacity and energy frames
SLOW_IDS = frozenset({0x35E, 0x35F, 0x370, 0x371, 0x378, 0x379, 0x380, 0x381, 0x382})
PAIRS = {0x370: 0x371, 0x371: 0x370, 0x380: 0x381, 0x381: 0x380}  #: always sent together
SLACK = 0.5  #: s; a frame is due this much early, so tick jitter never skips a period
SAVE_PERIOD = 60.0  #: s between writes of the energy file


def period(can_id: int) -> float:
    """How often ``can_id`` is sent [s] (when its content does not change)."""
    return SLOW_PERIOD if can_id in SLOW_IDS else FAST_PERIOD


class ForceCharge:
    """The 0x360 rule: ask for a charge after the SoC stayed low for a while, until it is back up.

    The request starts once the SoC has been below ``soc`` [%] for ``after`` seconds without a
    break, and ends when the SoC reaches ``release`` [%] (> ``soc``: hysteresis, so it never
    flickers around one threshold). An unknown SoC (no pack reporting, stale data) ends the
    request and restarts the wait: nobody vouches for the old value. ``soc`` = 0 turns the rule
    off (:meth:`update` always returns False).
    """

    def __init__(self, soc: float, after: float, release: float) -> None:
        self.soc = soc
        self.after = after
        self.release = release
        self.active = False  #: the request being sent
        self.below_since: float | None = None  #: when the SoC went below ``soc`` [s]

    @property
    def enabled(self) -> bool:
        """True when the rule is configured (``soc`` > 0)."""
        return self.soc > 0.0

    def update(self, soc: Any, now: float) -> bool:
        """Feed the bank SoC [%] (None when unknown) at time ``now`` [s]; return the request."""
        if not self.enabled:
            return False
        if isinstance(soc, bool) or not isinstance(soc, (int, float)) or math.isnan(soc):
            self._set(False, "SoC unknown")
            self.below_since = None
            return False
        if soc < self.soc:
            if self.below_since is None:
                self.below_since = now
            if now - self.below_since >= self.after:
                self._set(True, f"SoC {soc:.1f} % below {self.soc:g} % for {self.after:g} s")
        else:
            self.below_since = None
        if self.active and soc >= self.release:
            self._set(False, f"SoC {soc:.1f} % reached {self.release:g} %")
        return self.active

    def _set(self, active: bool, why: str) -> None:
        if active != self.active:
            log.info("force charge %s: %s", "requested" if active else "ended", why)
            self.active = active


class CanOutput:
    """The frames of the CAN-bus BMS port and their schedule; see the module docstring."""

    def __init__(self, config: CanConfig, max_gap: float = MAX_GAP) -> None:
        """Set up from the ``[can]`` section; loads the energy counters from ``energy_file``.

        Args:
            config: the CAN section of the configuration.
            max_gap: longest interval between two banks [s] the energy counter integrates.

        """
        self.config = config
        self.force = ForceCharge(
            config.force_charge_soc, config.force_charge_after, config.force_charge_release
        )
        self.store = EnergyFile(config.energy_file)
        self.energy = EnergyCounter(*self.store.load(), max_gap=max_gap)
        self.stale = False
        self.frames: list[canbms.Frame] = []  #: every frame of the latest bank, in order
        self._sent: dict[int, tuple[float, bytes]] = {}  # id -> (when, data) last sent
        self._saved_at: float | None = None

    @property
    def silent(self) -> bool:
        """True while nothing is sent: stale data with ``on_stale = "silent"``."""
        return self.stale and self.config.on_stale == "silent"

    def update(
        self, bank: Mapping[str, Any], now: float, stale: bool = False
    ) -> list[canbms.Frame]:
        """Take a bank message (the safe bank while ``stale``) and build its frames.

        Args:
            bank: the bank being published.
            now: the caller's monotonic time [s] (force-charge timing).
            stale: True when ``bank`` is the publisher's safe state for stale data.

        Returns:
            Every frame for this bank (what :meth:`due` chooses from).

        """
        if self.stale and not stale and self.config.on_stale == "silent":
            self.resend_all()  # the GX saw the battery vanish: tell it everything again
        self.stale = stale
        self.energy.add(bank)
        request = self.force.update(bank.get("soc"), now) if self.force.enabled else None
        self.frames = canbms.frames(bank, self.config, force_charge=request,
                                    energy=self.energy.totals)  # fmt: skip
        return self.frames

    def due(self, now: float) -> list[canbms.Frame]:
        """The frames to send at ``now`` [s], in order, and note them as sent.

        A frame is due when it was never sent, its period has passed (less :data:`SLACK`), or
        its content changed; the other half of a pair goes with it. Nothing while silent.
        """
        if self.silent:
            return []
        due = {can_id for can_id, data in self.frames if self._is_due(can_id, data, now)}
        due |= {PAIRS[i] for i in due if i in PAIRS}
        out = [(can_id, data) for can_id, data in self.frames if can_id in due]
        for can_id, data in out:
            self._sent[can_id] = (now, data)
        return out

    def _is_due(self, can_id: int, data: bytes, now: float) -> bool:
        last = self._sent.get(can_id)
        return last is None or last[1] != data or now - last[0] >= period(can_id) - SLACK

    def last_sent(self, can_id: int) -> float | None:
        """When ``can_id`` was last handed out by :meth:`due` [s], None if never (or reset)."""
        last = self._sent.get(can_id)
        return None if last is None else last[0]

    def resend_all(self) -> None:
        """Make every frame due at the next :meth:`due` (after a failed send or a silence)."""
        self._sent.clear()

    def save_due(self, now: float) -> bool:
        """True when the energy counters should be written now (every :data:`SAVE_PERIOD`)."""
        if not self.store.path:
            return False
        if self._saved_at is None:
            self._saved_at = now  # nothing new to keep right after start-up
            return False
        if now - self._saved_at < SAVE_PERIOD:
            return False
        self._saved_at = now
        return True

    def save(self) -> bool:
        """Write the energy counters to ``energy_file`` now (True when written)."""
        return self.store.save(self.energy.totals)
