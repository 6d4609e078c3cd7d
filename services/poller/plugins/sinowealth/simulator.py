"""A simulated Sinowealth BMS: answers ``0A cmd 04`` register reads from a model.

Each reply is the register's value encoded with the family's own layout, padded to four data
bytes and closed with the CRC-8/SMBus over the request and the data. Anything else (another
length, an unknown register, another family's bytes) gets silence; a cell register the pack
does not use reads 0 V (an assumption: no capture shows one). A model fault is reported as
its battery status bit. Only the captured frames in tests/test_sinowealth.py tie this to the wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.frames import checksum
from bmsbank.services.poller.plugins.sinowealth.family import (
    ALARM_BITS,
    CHARGE_FET,
    DATA_LENGTH,
    DISCHARGE_FET,
    MAX_CELLS,
    MIN_CELLS,
    REGISTERS,
    REQUEST_FRAMING,
    START,
    TWO_PROBES,
    VALUES,
    Family,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

IC_TEMPERATURE = 31.0  # °C, the chip's own reading


class Simulator(base.Simulator):
    """One Sinowealth BMS on a UART (the key of ``packs`` is nominal: the protocol has none)."""

    family = Family
    request_framing = REQUEST_FRAMING

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        if len(packs) != 1:
            raise ValueError(f"a Sinowealth UART port carries exactly one BMS, got {len(packs)}")
        model = next(iter(packs.values()))
        if not MIN_CELLS <= model.cells <= MAX_CELLS:
            raise ValueError(f"a Sinowealth BMS has {MIN_CELLS}-{MAX_CELLS} cells, "
                             f"not {model.cells}")  # fmt: skip
        super().__init__(packs, echo)

    @property
    def model(self) -> BatteryModel:
        """The pack behind this BMS."""
        return next(iter(self.packs.values()))

    def answer(self, request: bytes) -> bytes:
        """Four data bytes and the CRC for a known register read; silence for anything else."""
        if request[0] != START or request[2] != DATA_LENGTH or request[1] not in REGISTERS:
            return b""
        part = REGISTERS[request[1]]
        value = self.values()[part]
        name = VALUES[part][0]
        data = self.encode(part, {name: value}).ljust(DATA_LENGTH, b"\0")
        return data + bytes((checksum("crc8_smbus", request + data),))

    def values(self) -> dict[str, Any]:
        """The decoded value of every register part, from the model."""
        m = self.model
        cells = m.cell_voltages
        probes = list(m.temperatures[:2]) or [25.0]
        config = (m.cells - MIN_CELLS) | (TWO_PROBES if len(probes) == 2 else 0)
        fets = (CHARGE_FET if m.charge_fet else 0) | (DISCHARGE_FET if m.discharge_fet else 0)
        out: dict[str, Any] = {f"cell{n}": 0.0 for n in range(1, MAX_CELLS + 1)}  # unused: 0 V
        out.update({f"cell{n}": v for n, v in enumerate(cells, 1)})
        out.update({
            "voltage": m.voltage,
            "probe1": probes[0],
            "probe2": probes[-1],
            "ic_temperature": IC_TEMPERATURE,
            "current": m.effective_current,
            "capacity": m.capacity,
            "remaining": m.remaining,
            "soc": round(m.bms_soc),
            "cycles": m.cycles,
            "pack_status": fets,
            "battery_status": base.alarm_bits(m, ALARM_BITS),
            "config": config,
        })  # fmt: skip
        return out
