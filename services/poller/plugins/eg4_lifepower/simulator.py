"""A simulated RS485 bus of EG4 LiFePOWER packs: answers status and version requests per address.

Replies are built in the layout of the public captures (groups 1-10, six temperature words with
the MOSFET and ambient probes last, five status words). The check byte's algorithm is not public
(see the family): the simulator sends 0x00 there, which the family does not judge. A request
that is not ``7E adr cmd 00 chk 0D`` with a known command, or that is for an address without a
pack, gets no answer. Only the captured frames in tests/test_eg4_lifepower.py tie this to the real
wire.
"""

from __future__ import annotations

from bmsbank.services.poller.plugins.eg4_lifepower.family import (
    ALARM_BITS,
    CHARGING_BIT,
    CMD_FIRMWARE,
    CMD_HARDWARE,
    CURRENT_ZERO,
    DISCHARGING_BIT,
    END,
    FRAMING,
    START,
    TEMPERATURE_OFFSET,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

FIRMWARE = "3QT-YS00-16SV100A-V3.5"  # what a real pack reports (DSB PR #390)
HARDWARE = "B"
UNKNOWN_CHECK = 0x00
AMBIENT = 25.0  # °C


def frame(address: int, command: int, data: bytes) -> bytes:
    """``7E adr cmd len data chk 0D`` with the placeholder check byte."""
    return bytes((START, address, command, len(data))) + data + bytes((UNKNOWN_CHECK, END))


def group(gid: int, words: list[int]) -> bytes:
    """One group ``id n word[n]``."""
    return bytes((gid, len(words))) + b"".join((w & 0xFFFF).to_bytes(2, "big") for w in words)


def probe(celsius: float | None) -> int:
    """A temperature word: low byte °C + 50 (0: no probe)."""
    return 0 if celsius is None else max(1, min(255, round(celsius) + TEMPERATURE_OFFSET))


def status_payload(m: BatteryModel) -> bytes:
    """The status groups of pack ``m``."""
    current = m.effective_current
    probes: list[float | None] = list(m.temperatures[:4])
    probes += [None] * (4 - len(probes))
    state = 1 << CHARGING_BIT if current > 0 else 1 << DISCHARGING_BIT if current < 0 else 0
    alarms = base.alarm_bits(m, ALARM_BITS)
    return b"".join((
        group(1, [round(v * 1000) for v in m.cell_voltages]),
        group(2, [CURRENT_ZERO - round(current * 100)]),
        group(3, [round(m.bms_soc * 100)]),
        group(4, [round(m.capacity * 100)]),
        group(5, [probe(t) for t in probes] + [probe(m.mosfet_temperature), probe(AMBIENT)]),
        group(6, [0, alarms | state, 0, 0, 0]),
        group(7, [m.cycles]),
        group(8, [round(m.voltage * 100)]),
        group(9, [10000]),
        group(10, [0]),
    ))  # fmt: skip


class Simulator(base.Simulator):
    """One RS485 bus with EG4 LiFePOWER packs at the addresses of ``packs``."""

    family = Family
    request_framing = FRAMING

    def answer(self, request: bytes) -> bytes:
        """Answer a status or version request for a pack on the bus (b"" when nobody is there)."""
        parsed = parse_request(request)
        model = self.packs.get(parsed[0]) if parsed else None
        if parsed is None or model is None:
            return b""
        address, command = parsed
        if command == CMD_FIRMWARE:
            return frame(address, command, FIRMWARE.encode("ascii"))
        if command == CMD_HARDWARE:
            return frame(address, command, HARDWARE.encode("ascii"))
        return frame(address, command, status_payload(model))
