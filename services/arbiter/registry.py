"""Latest accepted state per pack, and whether each pack is online.

A pack is online from its first good state until ``stale_after`` seconds pass without one; it comes
back online with its next good state. Configured packs that never reported count as offline.

What a state must pass before it counts, in order (a rejection is counted for the pack under the
reason's first word, and for the bank; see :class:`Counters`):

1. the schema (:func:`bmsbank.schema.validate_state`): types, bounds, exact fields, derived values;
2. the bank: a configured pack;
3. plausibility (:mod:`bmsbank.plausibility`): its configured number of cells, its chemistry, its
   cell sum, its currents;
4. sequence and time: per pack and poller run (``epoch``) the sequence rises, by no more than
   a poller can send; the reading is neither older than ``stale_after`` nor ahead of this clock;
5. confirmation (:class:`Debounce`): a state that would cut the pack's charge or discharge
   current or trip the over-voltage cut, which the previous state did not, acts only when the
   next one confirms it (``[bank] confirm_states``), unless the BMS itself flags the matching
   protection. One corrupted reading moves no limit; a real, lasting fault acts one poll later.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bmsbank.errors import MessageError
from bmsbank.plausibility import PackBounds, implausible
from bmsbank.schema import ALARM, validate_state
from bmsbank.services.arbiter.serials import SerialWatch

log = logging.getLogger(__name__)

#: what a state means to the limits: (CCL [A], DCL [A], cell excess [V], capacity [Ah])
Figures = tuple[float, float, float, float]

MAX_AHEAD = 10.0  # s a reading's unix time may be ahead of this clock (clocks of two machines)
EPOCHS_KEPT = 4  # poller runs remembered per port (a replay of a forgotten one is too old anyway)
SEQ_SLACK = 100  # states a poller may send beyond its rate in one go
SEQ_RATE = 1000.0  # states per second a poller port can send at most (serial is far slower)
#: alarms that are the BMS's own protection of charge / discharge (a cut they explain acts at once)
CHARGE_PROTECTION = ("high_voltage", "high_cell_voltage", "high_charge_temperature",
                     "low_charge_temperature", "high_charge_current", "high_temperature",
                     "short_circuit", "internal_failure")  # fmt: skip
DISCHARGE_PROTECTION = ("low_voltage", "low_cell_voltage", "high_temperature", "low_temperature",
                        "high_discharge_current", "short_circuit", "internal_failure")  # fmt: skip


@dataclass
class PackEntry:
    """What the arbiter knows about one pack."""

    pack: str
    state: dict[str, Any] | None = None
    seen: float | None = None  #: arbiter monotonic time of the last good state [s]
    online: bool = False
    rejected: dict[str, int] = field(default_factory=dict)  #: rejections by reason's first word
    last_rejection: str = ""  #: why this pack's latest state was rejected
    rejection_current: bool = False  #: its latest state was rejected (no good one since)
    held: dict[str, Any] | None = None  #: a state waiting for confirmation
    held_why: str = ""  #: the steps it would take
    held_count: int = 0  #: states in a row that would step
    figures: Figures | None = None  #: the accepted state's, for :class:`Debounce`


@dataclass
class Counters:
    """Message counters, published in every bank message."""

    states: int = 0  #: good state messages
    rejected: int = 0  #: state messages rejected (any reason, including unconfirmed)
    lost: int = 0  #: sequence gaps (states the arbiter never got)
    unknown_packs: int = 0  #: good states from packs that are not configured
    reasons: dict[str, int] = field(default_factory=dict)  #: rejections by first failing field


class Debounce:
    """Which steps a state would take: cut charge, cut discharge, trip the over-voltage cut.

    ``evaluate(k, state, limit)`` is the engine's own per-pack rule
    (:class:`bmsbank.native.limits.PackRules`), so "a cut" means exactly what the engine would do.
    """

    def __init__(
        self, evaluate: Callable[[int, Mapping[str, Any], float], list], limit: float, count: int
    ) -> None:
        self.evaluate = evaluate
        self.limit = limit  #: V per cell over which the over-voltage cut trips
        self.count = count  #: states in a row a step must be seen in (1 = at once)

    def figures(self, k: int, state: Mapping[str, Any]) -> Figures:
        """(CCL [A], DCL [A], cell excess over the limit [V], capacity [Ah]) from ``state``."""
        row = self.evaluate(k, state, self.limit)
        return row[0], row[2], row[6], state["capacity"]

    def steps(
        self, state: Mapping[str, Any], new: Figures, old: Figures | None
    ) -> str:
        """The steps from figures ``old`` to ``new`` that ``state``'s BMS does not itself flag.

        A step: a current limit cut to 0, or by more than a tenth of what it was (and 1 A); the
        over-voltage cut starting; the capacity changing by more than a tenth (it moves the
        capacity share of every other pack). Against no earlier state (the first): only cuts to
        0 and the over-voltage cut.
        """
        alarms = state["alarms"]
        out = []
        for i, name, protection in ((0, "charge", CHARGE_PROTECTION),
                                    (1, "discharge", DISCHARGE_PROTECTION)):  # fmt: skip
            if old is None:
                cut = new[i] <= 0.0
            else:
                cut = new[i] <= 0.0 < old[i] or new[i] < old[i] - max(0.1 * old[i], 1.0)
            if cut and not any(alarms.get(a, 0) >= ALARM for a in protection):
                out.append(name)
        if (
            new[2] > 0.0
            and (old is None or old[2] <= 0.0)
            and not any(alarms.get(a, 0) >= ALARM for a in ("high_cell_voltage", "high_voltage"))
        ):
            out.append("over-voltage")
        if old is not None and abs(new[3] - old[3]) > 0.1 * old[3] + 1.0:
            out.append("capacity")
        return ", ".join(out)


class PackRegistry:
    """Tracks every configured pack (and any other that reports)."""

    def __init__(
        self,
        pack_ids: list[str],
        stale_after: float,
        bounds: Mapping[str, PackBounds] | None = None,
        debounce: Debounce | None = None,
        wall: Callable[[], float] | None = time.time,
    ) -> None:
        """Track ``pack_ids``.

        Args:
            pack_ids: the bank's packs, in engine order.
            stale_after: seconds after which a silent pack is offline (and a reading too old).
            bounds: per pack, its plausible readings and configured cell count (none: the
                schema's only).
            debounce: the confirmation of cuts (none: every state acts at once).
            wall: the unix clock a reading's time is compared with (None: not compared, for
                engines whose time is not this machine's, as in ``bmsbank limits``).

        """
        self.stale_after = stale_after
        self.packs: dict[str, PackEntry] = {pid: PackEntry(pid) for pid in pack_ids}
        self.index = {pid: k for k, pid in enumerate(pack_ids)}
        self.bounds = bounds or {}
        self.debounce = debounce
        self.wall = wall
        self.last_rejection = ""  #: why the latest rejected state was rejected
        self.held = 0  #: states held for confirmation so far (none of them rejected yet)
        self.counters = Counters()
        self.serials = SerialWatch()  #: warns once on a duplicate or changed serial number
        #: per pack, per poller run (epoch): [last sequence accepted, arbiter time of it]
        self._runs: dict[str, OrderedDict[int, list[float]]] = {}
        #: per port: (poller run, its last sequence) for counting what was lost
        self._ports: dict[str, tuple[int, int]] = {}

    def accept(self, msg: Any, now: float) -> PackEntry | None:
        """Check a decoded state message and store it; count and drop it when it fails.

        Returns the pack's entry when the state was accepted (stored and acting), else None
        (rejected, or held until the next state confirms it).
        """
        try:
            state = validate_state(msg)
        except MessageError as exc:
            pid = msg.get("pack") if type(msg) is dict else None
            self._reject(self.packs.get(pid) if type(pid) is str else None, str(exc))
            return None
        pid = state["pack"]
        entry = self.packs.get(pid)
        if entry is None:
            self.counters.unknown_packs += 1
            log.warning("[%s] state from a pack that is not in the bank; ignored", pid)
            return None
        b = self.bounds.get(pid)
        why = implausible(state, b) if b is not None else None
        if why is None:
            why = self._sequence(state, now)
        if why is not None:
            self._reject(entry, why)
            return None
        if (
            self.debounce is not None
            and self.debounce.count > 1
            and not self._confirmed(entry, state)
        ):
            if entry.online:  # it answers; its last accepted reading stands one poll more
                entry.seen = now  # (an offline pack stays offline: its old reading is no news)
            self.held += 1
            return None
        self.counters.states += 1
        if not entry.online:
            log.info("[%s] online", pid)
        entry.state, entry.seen, entry.online = state, now, True
        entry.rejection_current = False
        if state["serial"]:
            self.serials.see(pid, state["serial"])
        return entry

    def _confirmed(self, entry: PackEntry, state: dict[str, Any]) -> bool:
        """Whether ``state`` may act now; holds it when it would step and is not confirmed yet.

        Confirmed: ``count`` states in a row each step against the last accepted state (a real
        fault keeps stepping; a corrupted reading is followed by a normal one).
        """
        assert self.debounce is not None
        debounce = self.debounce
        figures = debounce.figures(self.index[entry.pack], state)
        steps = debounce.steps(state, figures, entry.figures)
        if steps:
            entry.held_count += 1
            if entry.held_count < debounce.count:
                entry.held, entry.held_why = state, steps
                return False
            log.warning("[%s] %d states in a row: %s", entry.pack, entry.held_count, steps)
        elif entry.held is not None:  # the held step was not confirmed: a bad reading
            self._reject(entry, f"unconfirmed: one state would have cut {entry.held_why}")
        entry.held, entry.held_count, entry.figures = None, 0, figures
        return True

    def _sequence(self, state: dict[str, Any], now: float) -> str | None:
        """Why the state's sequence or time cannot be a fresh reading, or None when it can."""
        if self.wall is not None:
            age = self.wall() - state["time"]
            if age > self.stale_after:
                return f"time: a reading {age:.0f} s old (stale after {self.stale_after:g} s)"
            if age < -MAX_AHEAD:
                return f"time: a reading {-age:.0f} s ahead of this clock"
        runs = self._runs.setdefault(state["pack"], OrderedDict())
        epoch, seq = state["epoch"], state["seq"]
        run = runs.get(epoch)
        if run is not None:
            last, when = run
            if seq <= last:
                return (
                    f"seq: {seq} is not after {int(last)} of this poller run (a replay or a repeat)"
                )
            if seq - last > SEQ_SLACK + SEQ_RATE * max(0.0, now - when):
                return f"seq: {seq} jumps {seq - int(last)} ahead of this poller run"
            run[0], run[1] = seq, now
            runs.move_to_end(epoch)
        else:  # a run not seen: a (re)started poller, whose sequence began at 0 at its epoch
            if self.wall is not None:
                uptime = state["time"] - epoch / 1e6
                if uptime < -MAX_AHEAD:
                    return f"epoch: a poller run starting {-uptime:.0f} s after its own reading"
                if seq > SEQ_SLACK + SEQ_RATE * max(0.0, uptime):
                    return f"seq: {seq} is more than a poller run of {uptime:.0f} s sends"
            runs[epoch] = [seq, now]
            if len(runs) > EPOCHS_KEPT:
                runs.popitem(last=False)
        # States the arbiter never got: gaps in the port's sequence (one per state of any of its
        # packs), within one run; bounded by the jump check above, so one value cannot poison it.
        port_run = self._ports.get(state["port"])
        if port_run is not None and port_run[0] == epoch and seq > port_run[1] + 1:
            self.counters.lost += seq - port_run[1] - 1
        if port_run is None or port_run[0] != epoch or seq > port_run[1]:
            self._ports[state["port"]] = (epoch, seq)
        return None

    def _reject(self, entry: PackEntry | None, why: str) -> None:
        self.counters.rejected += 1
        self.last_rejection = why
        key = why.split(":", 1)[0]
        self.counters.reasons[key] = self.counters.reasons.get(key, 0) + 1
        if entry is not None:
            entry.rejected[key] = entry.rejected.get(key, 0) + 1
            entry.last_rejection = why
            entry.rejection_current = True
        log.warning("rejected state%s: %s", f" of {entry.pack}" if entry else "", why)
        return None

    def refresh(self, now: float) -> list[str]:
        """Mark packs silent for over ``stale_after`` offline; return the ids that just went."""
        went = []
        for entry in self.packs.values():
            if entry.online and entry.seen is not None and now - entry.seen > self.stale_after:
                entry.online = False
                went.append(entry.pack)
                log.warning("[%s] offline: no state for %.1f s", entry.pack, now - entry.seen)
        return went

    def online(self) -> list[PackEntry]:
        """Online packs, in registry order."""
        return [e for e in self.packs.values() if e.online]
