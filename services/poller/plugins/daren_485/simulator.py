"""A simulated RS485 bus of Daren 485 packs: answers the family's five requests per address.

Requests are found with an ASCII framer for the family's request SOI (``~`` here, ``>`` for the
KS48100 subclass) and answered only when VER, ADR, CID1, CID2 and COMMAND INFO are exactly what
the family sends (the B0 function length aside): another address, VER or CID1 gets silence, as on
a shared bus, and so does a known service with other COMMAND INFO; an unknown CID2 of this
family gets the RTN 0x04 "CID2 invalid" reply (BASEN Table 3). A reply repeats the request's
CID1. Values come from the pack's :class:`BatteryModel`, encoded with the family's own layouts
and framed with :func:`~.family.frame`, so only the captured frames in tests/test_daren_485.py
tie both to the real wire. Status words carry the protection bits of the model's active alarms
and the FET bits as BASEN's Table 8 has them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bmsbank.native.spec import AsciiHex, FrameSpec
from bmsbank.services.poller.plugins.daren_485.family import (
    ALARM_WORDS,
    CAPACITY,
    FET_CHARGE_BIT,
    FET_DISCHARGE_BIT,
    INFO_AT,
    MAKER,
    PARAMS,
    REALTIME,
    REALTIME_EXTRA,
    RTN_OK,
    SERIAL,
    SERVICE_B0,
    VER,
    Family,
    frame,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import (
    CELL_OVER_VOLTAGE,
    CELL_UNDER_VOLTAGE,
    BatteryModel,
)

RTN_CID2_INVALID = 0x04
AMBIENT = 25.0  # °C, the simulated board sensor
CHARGING, DISCHARGING = 0x0001, 0x0002  # current status bits 0 and 1
CHARGE_C_RATE = 0.5  # the simulated charge current limit, in C
REPLY_SOI = b"~"


def mask(flags: list[bool], first: int = 0) -> int:
    """Bit i set for each flag i + ``first`` that is true (cells 1-16: first = 0)."""
    return sum(1 << i for i, on in enumerate(flags[first : first + 16]) if on)


class Simulator(base.Simulator):
    """One RS485 bus with Daren 485 packs at the addresses of ``packs``."""

    family: ClassVar[type[Family]] = Family
    request_framing: ClassVar[FrameSpec | None] = AsciiHex(soi=b"~")

    def answer(self, request: bytes) -> bytes:
        """Answer one request (b"" when nobody on the bus answers it)."""
        req = self._framer.payload(request)
        address, cid1, cid2, info = req[1], req[2], req[3], req[INFO_AT:]
        model = self.packs.get(address)
        services = self.family.services
        if model is None or req[0] != VER or cid1 not in {s.cid1 for s in services.values()}:
            return b""
        for part, s in services.items():
            wanted = s.command_info(address)
            cut = len(wanted) - 1 if s.cid2 == SERVICE_B0 else None  # B0: any function length
            if (s.cid1, s.cid2) == (cid1, cid2) and len(info) == len(wanted) \
                    and info[:cut] == wanted[:cut]:  # fmt: skip
                return frame(REPLY_SOI, address, cid1, RTN_OK, self.reply(part, model, address))
        if any(s.cid2 == cid2 for s in services.values()):
            return b""
        return frame(REPLY_SOI, address, cid1, RTN_CID2_INVALID)

    def reply(self, part: str, model: BatteryModel, address: int) -> bytes:
        """The INFO of ``part``'s reply for ``model``."""
        values = {
            REALTIME: self.realtime,
            PARAMS: self.params,
            CAPACITY: self.capacity,
            SERIAL: self.serial,
            MAKER: self.maker,
        }[part](model, address)
        info = self.encode(part, values)
        return info + b"\x01\x01" if part == MAKER else info  # MAKER: the boot version follows

    def b0_echo(self, part: str, address: int) -> dict[str, int]:
        """The request repeated at the start of a B0 reply."""
        _, operation, module, function, length = self.family.services[part].command_info(address)
        return {"service": SERVICE_B0, "group": address, "operation": operation,
                "module": module, "function": function, "function_length": length}  # fmt: skip

    @staticmethod
    def realtime(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x42 reply from the model."""
        words = {word: base.alarm_bits(m, protections)
                 for word, (protections, _) in ALARM_WORDS.items()}  # fmt: skip
        current = m.effective_current
        words["current_status"] |= CHARGING if current > 0 else DISCHARGING if current < 0 else 0
        cells, temps = m.cell_voltages, list(m.temperatures)
        over = mask([v >= CELL_OVER_VOLTAGE for v in cells])
        under = mask([v <= CELL_UNDER_VOLTAGE for v in cells])
        balancing = [bool(b) for b in m.balancing]
        high = mask(balancing, 16)
        return {
            "dataflag": 0, "soc": m.bms_soc, "voltage": m.voltage,
            "cell_count": m.cells, "cells": cells,
            "ambient_temperature": AMBIENT,
            "pack_temperature": sum(temps) / len(temps) if temps else AMBIENT,
            "mosfet_temperature": m.mosfet_temperature,
            "sensor_count": len(temps), "temperatures": temps,
            "current": current, "resistance": 0.0, "soh": 100, "user_defined": 1,
            "capacity": m.capacity, "remaining": m.remaining, "cycles": m.cycles,
            **words,
            "fet_status": m.discharge_fet << FET_DISCHARGE_BIT | m.charge_fet << FET_CHARGE_BIT,
            "cell_ov_protection": over, "cell_uv_protection": under,
            "cell_ov_alarm": 0, "cell_uv_alarm": 0,
            "balance_low": mask(balancing),
            "tail": [high >> 8, high & 0xFF] + [0] * (REALTIME_EXTRA - 2),
        }  # fmt: skip

    def params(self, m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x47 reply."""
        return {
            "dataflag": 0, "cell_high_limit": CELL_OVER_VOLTAGE,
            "cell_low_limit": CELL_UNDER_VOLTAGE,
            "charge_current_upper": CHARGE_C_RATE * m.capacity, "param_cells": m.cells,
            "charge_current_limit": CHARGE_C_RATE * m.capacity,
            "design_capacity": m.capacity, "balance_mode": 0, "product_barcode": "",
            "bms_barcode": f"BMS-{self.serial_number(address)}",
        }  # fmt: skip

    def capacity(self, m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the B0 module 4 reply."""
        return {
            **self.b0_echo(CAPACITY, address),
            "remaining": m.remaining, "capacity": m.capacity, "design_capacity": m.capacity,
            "charged_total": round(m.cycles * m.capacity),
            "discharged_total": round(m.cycles * m.capacity),
            "charged_energy": m.cycles * m.capacity * m.voltage / 1000,
            "discharged_energy": m.cycles * m.capacity * m.voltage / 1000,
        }  # fmt: skip

    def serial(self, m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the B0 module 3 reply."""
        return {
            **self.b0_echo(SERIAL, address),
            "pack_serial": self.serial_number(address), "product_id": "", "bms_id": "",
            "born": [24, 11, 28], "manufacturer": "SIM",
        }  # fmt: skip

    def maker(self, m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x51 reply."""
        return {"hardware_type": "SIM", "product_code": f"{self.family.name.upper()}-SIM",
                "project_code": f"{m.cells}S{m.capacity:.0f}A", "software": [1, 0, 2]}  # fmt: skip

    def serial_number(self, address: int) -> str:
        """The simulated pack serial at ``address``."""
        return f"{self.family.name.upper()}-{address:04d}"
