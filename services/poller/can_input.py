"""The CAN input: one process per CAN interface (``[[can_inputs]]``); states to the arbiter.

``python -m bmsbank.services.poller.can_input --input NAME [--config FILE]``.

One python-can bus (``interface``, ``channel``, ``bitrate``; an slcan adapter is opened without
python-can's two-second settling sleep). Every received frame goes to the family
(:class:`~bmsbank.services.poller.can_family.CanFamily`): :meth:`address_of` names its pack and
:meth:`accept` decodes it into that pack's parts; a frame no configured pack owns (another
family's id, an address not configured) is counted on the input (:attr:`CanInput.unexpected`,
logged once per change: it belongs to no pack's link counters), a frame the family rejects under
its kind in that pack's counters. Every ``interval`` each pack is asked for its frames (a polled
family; nothing for a broadcasting one), and after the family's reply time its state is built,
checked and pushed exactly as the serial poller does
(:func:`~bmsbank.services.poller.service.checked_state`), but only when frames of that pack
arrived since the last state: a pack that falls silent sends nothing, and the arbiter's
``stale_after`` takes it offline. A part not refreshed for :data:`PART_MAX_AGE` (or three
intervals, if longer) is dropped, so a frame that stops coming cannot keep old values alive; the
family's ``transient`` parts (event frames) are dropped once a state has reported them.

A bus that cannot be opened, or fails while open (the adapter unplugged), is closed and retried
with backoff (0.5 s doubling to 30 s), logged once per state change. The loop blocks in
``recv`` until the next frame or the next due time (at most :data:`WAIT_SLICE`): no busy
waiting. The input says hello on the control channel like a serial poller (no controls).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import select
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq

from bmsbank import config as configuration
from bmsbank import logs, plausibility, runtime
from bmsbank.config import CanInputConfig, Config
from bmsbank.errors import ConfigError, FrameError
from bmsbank.logs import ChangeLog
from bmsbank.plausibility import PackBounds, default_bounds
from bmsbank.services.poller import plugins
from bmsbank.services.poller.can_family import CanFamily, CanFrame
from bmsbank.services.poller.linkstate import LinkReport
from bmsbank.services.poller.plugins.base import LinkStats
from bmsbank.services.poller.service import BACKOFF_MAX, BACKOFF_MIN, checked_state, zmq_sender

log = logging.getLogger(__name__)

WAIT_SLICE = 1.0  #: s; the longest one recv blocks (stop, hello and heartbeat are looked at)
PART_MAX_AGE = 30.0  #: s; a part older than this (or 3 intervals) is dropped
#: extra keyword arguments of python-can's Bus per interface (slcan: no 2 s sleep after open)
BUS_OPTIONS: dict[str, dict[str, Any]] = {"slcan": {"sleep_after_open": 0}}


def load_family(name: str, options: Mapping[str, Any] | None = None) -> CanFamily:
    """Instantiate the CAN family ``name`` with its options.

    Raises:
        KeyError: no family of that name, or it does not speak CAN.

    """
    if plugins.info(name).link.upper() != "CAN":
        raise KeyError(f"{name} is not a CAN family")
    cls: type[CanFamily] = importlib.import_module(f"{plugins.__name__}.{name}.family").Family
    return cls(options or {})


def open_bus(interface: str, channel: str, bitrate: int) -> Any:
    """A python-can bus (raises whatever python-can or the driver raises when it cannot open)."""
    import can

    return can.Bus(interface=interface, channel=channel, bitrate=bitrate,
                   **BUS_OPTIONS.get(interface, {}))  # fmt: skip


@dataclass
class CanPack:
    """One pack on the bus: its counters, parts and schedule."""

    address: int
    stats: LinkStats = field(default_factory=LinkStats)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  #: part -> when it last came [s]
    fresh: bool = False  #: frames came since the last state
    build_at: float | None = None  #: when to build the state (after the requests' reply time)


class CanInput:
    """Reads one CAN bus: frames to parts, parts to states, requests for polled families."""

    def __init__(
        self,
        cfg: CanInputConfig,
        send: Callable[[dict[str, Any]], None],
        family: CanFamily | None = None,
        bounds: Mapping[str, PackBounds] | None = None,
        bus_factory: Callable[[str, str, int], Any] = open_bus,
    ) -> None:
        """Read ``cfg``'s bus, handing each state to ``send``.

        ``bounds``: per pack id, its plausible readings (default: the LiFePO4 defaults).
        """
        self.cfg = cfg
        self.send = send
        self.family = family or load_family(cfg.bms, cfg.options)
        self.bounds = bounds or {}
        self.default_bounds = default_bounds()
        self.bus_factory = bus_factory
        self.bitrate = cfg.bitrate or self.family.info.baudrate
        self.reply_time = cfg.timeout or self.family.reply_timeout
        self.max_age = max(PART_MAX_AGE, 3 * cfg.interval)
        self.packs = {a: CanPack(a) for a in cfg.addresses}
        self.bus: Any = None
        self._poll: select.poll | None = None  #: waits on the bus's descriptor, when it has one
        self.backoff = BACKOFF_MIN
        self.retry_at = 0.0  #: monotonic time of the next attempt to open the bus [s]
        self.next_cycle = 0.0  #: monotonic time of the next poll cycle [s]
        self.cycle = 0
        self.seq = 0
        self.unexpected = 0  #: frames no configured pack owns
        self.bus_errors = 0  #: failures to open, read or write the bus
        self.changes = ChangeLog(log, f"[{cfg.name}] ")
        #: the bus's and packs' link states for the arbiter's reasons (sent on a change, see run)
        self.report = LinkReport(cfg.name, f"{cfg.interface}:{cfg.channel}",
                                 {a: p.stats for a, p in self.packs.items()})  # fmt: skip

    def pack_ids(self) -> list[str]:
        """Ids of the packs this input owns, "name:address"."""
        return [f"{self.cfg.name}:{a}" for a in self.packs]

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> float:
        """One turn: open the bus when due, take one frame, run what is due.

        Returns:
            Seconds to wait before the next turn (0 when the bus is open: recv waited).

        """
        now = time.monotonic()
        if self.bus is None:
            if now < self.retry_at:
                return min(WAIT_SLICE, self.retry_at - now)
            if not self._open(now):
                return min(WAIT_SLICE, self.retry_at - now)
        due = min([self.next_cycle, *(p.build_at for p in self.packs.values() if p.build_at)])
        try:
            msg = self._receive(max(0.0, min(WAIT_SLICE, due - now)))
        except Exception as exc:  # python-can and its drivers raise many kinds: all lose the bus
            self._lose(f"read failed: {exc}")
            return 0.0
        if msg is not None:
            self.take(msg)
        self.run_due(time.monotonic())
        return 0.0

    def _receive(self, timeout: float) -> Any:
        """The next message within ``timeout`` seconds, or None.

        Where the bus has a descriptor, the wait is a ``poll`` on it: python-can's slcan
        ``recv(timeout)`` reads byte by byte with a 1 ms serial timeout, a wake-up every
        millisecond while the bus is quiet. A descriptor that reports an error or a hang-up
        (the adapter is gone) raises, which loses the bus.
        """
        if self._poll is None:
            return self.bus.recv(timeout)
        msg = self.bus.recv(0.0)  # a line the driver already holds
        if msg is not None or timeout <= 0:
            return msg
        for _fd, event in self._poll.poll(max(1, int(timeout * 1000))):
            if event & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                raise OSError(f"the bus descriptor reports {event:#x} (adapter gone?)")
            return self.bus.recv(0.0)
        return None

    def take(self, msg: Any) -> None:
        """Hand one received python-can message to its pack (error and remote frames skipped)."""
        if msg.is_error_frame or msg.is_remote_frame:
            return
        frame = CanFrame(msg.arbitration_id, bytes(msg.data), bool(msg.is_extended_id))
        address = self.family.address_of(frame)
        pack = self.packs.get(address) if address is not None else None
        if pack is None:
            self.unexpected += 1
            why = f"id 0x{frame.id:X}: no configured pack of {self.family.name}"
            self.changes.set("frames", "unexpected frames seen", logging.INFO, why)
            return
        before = {k: id(v) for k, v in pack.parts.items()}
        try:
            self.family.accept(frame, pack.parts)
        except FrameError as exc:
            pack.stats.count(exc.kind)
            log.debug("[%s:%d] %s", self.cfg.name, address, exc)
            return
        except Exception as exc:  # a family's defect: a bus that repeats the frame every
            # second must not crash-loop the process; counted, logged once with its traceback
            pack.stats.malformed += 1
            if self.changes.set(str(address), "family error", logging.ERROR, repr(exc)):
                log.exception("[%s:%d] %s failed on %s", self.cfg.name, address,
                              self.family.name, frame)  # fmt: skip
            return
        now = time.monotonic()
        for key, value in pack.parts.items():
            if before.get(key) != id(value):
                pack.seen[key] = now
        pack.fresh = True

    def run_due(self, now: float) -> None:
        """Start a poll cycle when due (requests, reply time), build the states that are due."""
        if now >= self.next_cycle:
            step = self.cfg.interval
            # on schedule; after a stall, one interval from now (no burst of late cycles)
            self.next_cycle = nxt if (nxt := self.next_cycle + step) > now else now + step
            for pack in self.packs.values():
                requests = self.family.requests(pack.address, self.cycle)
                if requests and not self._send(requests):
                    return
                if pack.build_at is None:  # a state still waiting for replies is not put off
                    pack.build_at = now + (self.reply_time if requests else 0.0)
            self.cycle += 1
        for pack in self.packs.values():
            if pack.build_at is not None and now >= pack.build_at:
                pack.build_at = None
                self._publish(pack, now)

    def _send(self, frames: Any) -> bool:
        import can

        try:
            for f in frames:
                self.bus.send(can.Message(arbitration_id=f.id, data=f.data,
                                          is_extended_id=f.extended))  # fmt: skip
        except Exception as exc:
            self._lose(f"write failed: {exc}")
            return False
        return True

    def _publish(self, pack: CanPack, now: float) -> None:
        """Build, check and send the state of ``pack`` when frames of it came since the last."""
        for key in [k for k, t in pack.seen.items() if now - t > self.max_age]:
            del pack.seen[key]
            pack.parts.pop(key, None)
        if not pack.fresh:
            self.changes.set(str(pack.address), "silent", logging.WARNING, "no frames")
            self.report.failed(pack.address, False, "no frames")
            return
        pack.fresh = False
        try:
            fields = self.family.state(pack.parts)
        except FrameError as exc:
            pack.stats.count(exc.kind)
            self.changes.set(str(pack.address), "incomplete", logging.WARNING, str(exc))
            self.report.refused(pack.address, "incomplete", f"incomplete frames: {exc}")
            return
        except Exception as exc:  # a family's defect (see take)
            pack.stats.malformed += 1
            if self.changes.set(str(pack.address), "family error", logging.ERROR, repr(exc)):
                log.exception("[%s:%d] %s state failed", self.cfg.name, pack.address,
                              self.family.name)  # fmt: skip
            return
        bounds = self.bounds.get(f"{self.cfg.name}:{pack.address}", self.default_bounds)
        msg = checked_state(self.cfg.name, pack.address, self.family.name, self.seq, fields,
                            pack.stats, bounds)  # fmt: skip
        if isinstance(msg, str):
            self.changes.set(str(pack.address), "implausible values", logging.WARNING, msg)
            self.report.refused(pack.address, "implausible", msg)
            return
        self.changes.set(str(pack.address), "answering")
        self.report.answered(pack.address)
        self.seq += 1
        self.send(msg)
        # event parts (a JK alarm frame sent only while the alarm holds) report once
        for key in getattr(self.family, "transient", ()):
            pack.parts.pop(key, None)
            pack.seen.pop(key, None)

    # -- the bus -----------------------------------------------------------------------------
    def _open(self, now: float) -> bool:
        cfg = self.cfg
        try:
            self.bus = self.bus_factory(cfg.interface, cfg.channel, self.bitrate)
        except Exception as exc:  # python-can, serial and OS errors alike: retried
            self.bus = None
            self.bus_errors += 1
            for pack in self.packs.values():
                pack.stats.port_errors += 1
            self.retry_at = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            self.changes.set("bus", "missing", logging.WARNING, f"{cfg.channel}: {exc}")
            self.report.port_state("missing", f"{cfg.channel}: {exc}")
            return False
        self._poll = None
        try:
            fd = self.bus.fileno()
        except Exception:  # python-can raises NotImplementedError where there is none
            fd = -1
        if isinstance(fd, int) and fd >= 0:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
        self.backoff = BACKOFF_MIN
        self.next_cycle = now + self.cfg.interval  # frames first: a pack is not silent at once
        self.changes.set("bus", "open", logging.INFO,
                         f"{cfg.interface} {cfg.channel} at {self.bitrate} bit/s")  # fmt: skip
        self.report.port_state("open")
        return True

    def _lose(self, why: str) -> None:
        self.bus_errors += 1
        for pack in self.packs.values():
            pack.stats.port_errors += 1
            # nothing from before the outage is combined with what comes after it
            pack.parts.clear()
            pack.seen.clear()
            pack.fresh = False
        self.close()
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.changes.set("bus", "lost", logging.WARNING, why)
        self.report.port_state("missing", why)

    def close(self) -> None:
        """Close the bus (python-can's shutdown; errors of a vanished adapter are ignored)."""
        bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except Exception as exc:
                log.debug("[%s] shutdown: %s", self.cfg.name, exc)

    def control(self, pack_id: str, action: str, value: Any) -> str | None:
        """No family on a CAN input takes controls yet: every request is refused."""
        return f"{self.family.name} on CAN input {self.cfg.name} does not support {action}"


def run(
    config: Config,
    name: str,
    stop: Callable[[], bool] = lambda: False,
    hello_interval: float | None = None,
    heartbeat: runtime.Heartbeat | None = None,
) -> None:
    """Read CAN input ``name`` until ``stop()`` is true (or SystemExit from a signal)."""
    from bmsbank.services.poller.control import HELLO_INTERVAL, PollerControl

    cfg = config.can_input(name)
    context: zmq.Context = zmq.Context.instance()
    sock, send = zmq_sender(config, context)
    bounds = plausibility.bounds(config.bank, config.topology())
    reader = CanInput(cfg, send, bounds=bounds)
    control = PollerControl(
        config.control_endpoint, cfg.name, reader.family.name, reader.pack_ids(), context,
        hello_interval or HELLO_INTERVAL,
    )  # fmt: skip
    allowance = runtime.hung_after(config.bank.stale_after, config.bank.interval)
    log.info("[%s] reading %s %s (%s) for %s every %.1f s", cfg.name, cfg.interface, cfg.channel,
             cfg.bms, cfg.addresses, cfg.interval)  # fmt: skip
    try:
        while not stop():
            if heartbeat is not None:
                heartbeat.beat_every(1.0, allowance)
            wait = reader.step()
            control.between(reader.control)
            control.report_link(reader.report)
            if wait > 0:
                control.wait(wait, reader.control, stop)
    finally:
        reader.close()
        control.close()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bmsbank.services.poller.can_input --input NAME``."""
    p = argparse.ArgumentParser(prog="bmsbank-can-input", description="Read one CAN input.")
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="directory of the ipc:// sockets")
    p.add_argument("--input", required=True, help="the [[can_inputs]] name")
    args = p.parse_args(argv)
    try:
        config = configuration.load(args.config, args.runtime_dir)
        config.can_input(args.input)
    except ConfigError as exc:
        return configuration.fail("bmsbank-can-input", exc)
    logs.setup(f"can-input[{args.input}]", config.log_level)
    runtime.exit_on_stop_signals()
    heartbeat = runtime.Heartbeat.supervised(config.runtime_dir)
    try:
        run(config, args.input, heartbeat=heartbeat)
    finally:
        heartbeat.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
