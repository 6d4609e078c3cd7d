"""A simulated HLPdata BMS4S: answers ``pv`` and ``m1`` on its text terminal from a model.

It echoes the command on a line of its own, then sends the reply line: the version text, or the
status line in SB's field order (cells and current to the millivolt and milliamp, SoC, the FET
flags, the beep code of the model's first fault the BMS reports, two battery probes ``b1``/``b2``
and a board probe ``i1``). Anything else gets silence; a CR ends a command as a newline does, so a
stray CR-terminated request of another family does not swallow the next command. Only the tests'
lines (built from SB's field list: no capture is public) tie this to the wire.
"""

from __future__ import annotations

from bmsbank.services.poller.plugins.hlpdatabms4s.family import (
    BEEPS,
    CELLS,
    REQUEST_FRAMING,
    Family,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

VERSION_TEXT = "HLPdata BMS4S 4.1.89"
BOARD_TEMPERATURE = 30  # °C, the ``i1`` probe (not a battery probe: not reported)


def status_line(m: BatteryModel) -> str:
    """The ``m1`` line for ``m``, without its terminator."""
    faults = {name: code for code, (name, _) in sorted(BEEPS.items())}
    beep = next((faults[n] for n in sorted(m.active_alarms) if n in faults), 0)
    cells = ",".join(f"{v:.3f}" for v in m.cell_voltages)
    probes = "".join(f",b{i} {t:.0f}" for i, t in enumerate(m.temperatures[:4], 1))
    return (f"{cells},{m.effective_current:.3f},{round(m.bms_soc)},{int(m.charge_fet)},"
            f"{int(m.discharge_fet)},{m.voltage:.2f},{round(m.bms_soc)},0,{beep},1"
            f"{probes},i1 {BOARD_TEMPERATURE}")  # fmt: skip


class Simulator(base.Simulator):
    """One BMS4S on a UART (the key of ``packs`` is nominal: the protocol has no address)."""

    family = Family
    request_framing = REQUEST_FRAMING

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        if len(packs) != 1:
            raise ValueError(f"a BMS4S UART port carries exactly one BMS, got {len(packs)}")
        if next(iter(packs.values())).cells != CELLS:
            raise ValueError(f"a BMS4S has {CELLS} cells")
        super().__init__(packs, echo)

    @property
    def model(self) -> BatteryModel:
        """The pack behind this BMS."""
        return next(iter(self.packs.values()))

    def answer(self, request: bytes) -> bytes:
        """The echo and the reply line for ``pv`` and ``m1``; silence for anything else."""
        command = request.rstrip(b"\r\n").rsplit(b"\r", 1)[-1].strip()
        if command == b"pv":
            text = VERSION_TEXT
        elif command == b"m1":
            text = status_line(self.model)
        else:
            return b""
        return command + b"\r\n" + text.encode("ascii") + b"\r\n"
