"""JBD UP series (UP16S015 and its kin) over RS485 at 9600 Bd: JBD's "UP" Modbus-like frames.

Frames, both directions: ``adr fn start:u16 end:u16 n:u16 data[n] crc``, big endian but for the
CRC-16/MODBUS over everything before it, low byte first (the toolkit's ModbusRtu with
``long_functions``). ``start``/``end`` are byte addresses, ``end = start + the window asked``; a
read request carries n = 0, a reply repeats the request's start and end with the data it has (n
is not always the window: 156 bytes answer the 160-byte pack status window, 116 the 84-byte
individual status). Several packs share the bus, told apart by ``adr``; the master is pack 1.

Reads (fn 0x78 unless said), first to last; only the first is required, and only it works for
every pack on every port: the others are answered by the pack the port is wired to (the master,
in the usual set-up) or, on the UART port of the Bluetooth/WiFi module, for every pack (DSB's
class docstrings). The port option ``extended_reads`` says which packs are asked for them:
``master`` (default), ``all`` or ``none``; a pack that never answers them would cost a reply
timeout per cycle (DSB stops asking after 5 failures; the poller has no such memory).

- 0x1000-0x10A0 ``status``, every cycle (also the read ``bmsbank scan`` identifies with): pack
  voltage (u16 10 mV), a u16, current (u32 10 mA with 300000 = 0 A, + = charge), SoC (u16
  0.01 %, whole percent when the master forwards a slave's), remaining, full and rated capacity
  (u16 10 mAh), MOSFET and ambient temperature (u16 0.1 °C with 500 = 0 °C), operation status,
  SoH (%), fault flags and alarm flags (u32), MOSFET flags (bit 0 discharge, bit 1 charge on), a
  connection state, cycles, min/max/average cell and temperature statistics, charge voltage
  limit, charge current limit, discharge voltage limit, discharge current limit (u16 0.1 V /
  0.1 A), the cell count and as many cells (mV), the sensor count and as many temperatures, a
  u16, the balancing flags (bit 0 = cell 1), the firmware version and the 30-byte pack serial.
- 0x2000-0x2050 ``params2``, every cycle, optional: the high-resolution SoC (u16 0.01 %, byte
  0x2006) and the lifetime charged/discharged totals (u32 0.1 Ah at 0x2010 and 0x2014).
- fn 0x45 0x0000-0x0054 ``individual``, pack 1 (the master) only, every cycle, optional: the
  master's own charge and discharge current limits (u16 0.1 A at bytes 96 and 98).
- 0x1C00-0x1CA0 ``params1``, once, optional: BMS model and serial (30 bytes at 16), pack
  serial (30 bytes at 52) and their production dates.
- 0x2810-0x283C ``product``, once, optional: model id, hardware revision, firmware version
  (three u16), model and project code (16 bytes each at 12 and 28).

State: ``soc`` is the high-resolution SoC while it is within 1 % of the pack status's (a stale
or lost params2 read falls back to the status, as dbus-serialbattery does); ``bms_cvl`` the
charge voltage limit; ``bms_ccl``/``bms_dcl`` the status limits of a slave, and for the master
those of the individual status only: the master's status carries the whole bank's limits
(DSB's test frames: 240/550 A aggregated, 100/200 A its own), which would overstate
one pack, so without the individual status the master reports none. ``serial`` is the pack
serial of the status (read every cycle, so it never changes with the optional reads);
``hardware`` names the product and firmware version, with the BMS model and serial of params1
when read. Fault flags raise alarms (level 2), alarm flags warnings (level 1); the EEPROM and RTC
bits of the alarm flags are failures (level 2).

Not decoded: fn 0x79 writes. dbus-serialbattery sets the SoC with one (``11 4A 42 44`` + the SoC
at 0x2006), to a target (100 % when it decides the pack is full): bmsbank's ``reset_soc`` takes
no target, so no control is offered.

Sources (facts only, no code copied):

- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/lltjbd_up16s.py (from
  PhracturedBlue's protocol notes, tested on UP16S015 firmware 10.2.1 and 12.1.7): the frame,
  CRC and requests (``send_request_and_parse_response_internal``, ``parse_frame``), every
  layout (``PackStatus``, ``PackParams1``, ``PackParams2``, ``IndividualPackStatus``,
  ``ProductInformation``), the scales (``from_raw_*``), the flag bits
  (``parse_protection_and_alarms``, ``MosfetFlags``), master = address 1 (``is_master``), the
  1.5 s reply timeout ("it usually takes 0.3-0.6 s to receive a response").
- DSB tests/bms/test_lltjbd_up16s.py: request/reply pairs for addresses 1 and 2 with their
  decoded values (the frames in tests/test_lltjbd_up16s.py; every CRC checks). They are the
  driver's test data, not a recording whose real condition is known: the current sign (+ =
  charge) is DSB's (dbus-serialbattery's battery current is + = charge, and it passes this
  value on as is), as in JBD's classic protocol; no public frame confirms it independently.

Where DSB is inconsistent with itself, the bit tables follow the flag word the bit is read from
elsewhere: DSB reads "temperature difference fault" (bit 16) and "full charge protection 1"
(bit 25) from the alarm flags and "ambient temperature alarms" (bits 11, 12) from the fault
flags; here bit 16 of the fault flags is the temperature-difference fault, bits 11/12 of the
alarm flags the ambient alarms, and the full-charge protection bits (fault 25, alarm 18), a
normal stop at full charge, raise nothing. A short circuit (fault bit 18) is ``short_circuit``
(DSB: discharge overcurrent), as bmsbank has that alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Field, Layout, ModbusRtu
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    bits,
    graded_alarms,
    modbus_frame,
    require,
)
from bmsbank.services.poller.plugins.lltjbd_up16s import INFO

FN_READ, FN_INDIVIDUAL = 0x78, 0x45
MASTER = 1
STATUS, PARAMS2, INDIVIDUAL, PARAMS1, PRODUCT = (
    "status", "params2", "individual", "params1", "product",
)  # fmt: skip
#: part -> (function, first byte address, bytes asked)
WINDOWS: dict[str, tuple[int, int, int]] = {
    STATUS: (FN_READ, 0x1000, 0xA0),
    PARAMS2: (FN_READ, 0x2000, 0x50),
    INDIVIDUAL: (FN_INDIVIDUAL, 0x0000, 0x54),
    PARAMS1: (FN_READ, 0x1C00, 0xA0),
    PRODUCT: (FN_READ, 0x2810, 0x2C),
}
#: (function, first address) -> part
PARTS: dict[tuple[int, int], str] = {(fn, start): p for p, (fn, start, _) in WINDOWS.items()}
DATA_AT = 8  # adr fn start end n
HEAD = slice(1, 6)  # fn start end: what a reply repeats of its request
SOC_AGREEMENT = 1.0  # % the high-resolution SoC may differ from the status's and be used
#: MOSFET flags (DSB ``MosfetFlags``)
FET_DISCHARGE, FET_CHARGE = 0x01, 0x02
CELSIUS = -50.0  # 0.1 °C with 500 = 0 °C
AMPS_ZERO = -3000.0  # 10 mA with 300000 = 0 A

STATUS_FIELDS: tuple[Field, ...] = (
    Field("voltage", 0, "u16be", scale=0.01),  # V
    Field("unknown1", 0, "u16be"),
    Field("current", 0, "u32be", scale=0.01, bias=AMPS_ZERO),  # A, + = charge
    Field("status_soc", 0, "u16be", scale=0.01),  # %
    Field("remaining", 0, "u16be", scale=0.01),  # Ah
    Field("capacity", 0, "u16be", scale=0.01),  # Ah, full charge
    Field("rated_capacity", 0, "u16be", scale=0.01),  # Ah
    Field("mosfet_temperature", 0, "u16be", scale=0.1, bias=CELSIUS),  # °C
    Field("ambient_temperature", 0, "u16be", scale=0.1, bias=CELSIUS),  # °C
    Field("operation_status", 0, "u16be"),
    Field("soh", 0, "u16be"),  # %
    Field("fault_flags", 0, "u32be"),
    Field("alarm_flags", 0, "u32be"),
    Field("mosfet_flags", 0, "u16be"),
    Field("connection_flags", 0, "u16be"),
    Field("cycles", 0, "u16be"),
    Field("max_cell_number", 0, "u16be"),
    Field("max_cell_voltage", 0, "u16be", scale=0.001),  # V
    Field("min_cell_number", 0, "u16be"),
    Field("min_cell_voltage", 0, "u16be", scale=0.001),  # V
    Field("avg_cell_voltage", 0, "u16be", scale=0.001),  # V
    Field("max_sensor_number", 0, "u16be"),
    Field("max_temperature", 0, "u16be", scale=0.1, bias=CELSIUS),  # °C
    Field("min_sensor_number", 0, "u16be"),
    Field("min_temperature", 0, "u16be", scale=0.1, bias=CELSIUS),  # °C
    Field("avg_temperature", 0, "u16be", scale=0.1, bias=CELSIUS),  # °C
    Field("charge_voltage_limit", 0, "u16be", scale=0.1),  # V
    Field("charge_current_limit", 0, "u16be", scale=0.1),  # A (master: the bank's)
    Field("discharge_voltage_limit", 0, "u16be", scale=0.1),  # V
    Field("discharge_current_limit", 0, "u16be", scale=0.1),  # A (master: the bank's)
    Field("cell_count", 0, "u16be"),
    Field("cells", 0, "u16be", scale=0.001, count_from="cell_count"),  # V
    Field("sensor_count", 0, "u16be"),
    Field("temperatures", 0, "u16be", scale=0.1, bias=CELSIUS, count_from="sensor_count"),
    Field("unknown2", 0, "u16be"),
    Field("balancing", 0, "u16be"),  # bit 0 = cell 1
    Field("firmware", 0, "u16be"),  # major << 8 | minor (a slave's via the master: one number)
    Field("pack_serial", 0, "str", count=30),
    Field("extension", 0, "u8", count=0),  # fields DSB does not name
)
PARAMS2_FIELDS: tuple[Field, ...] = (
    Field("soc", 6, "u16be", scale=0.01),  # %, byte address 0x2006
    Field("charged_total", 16, "u32be", scale=0.1),  # Ah
    Field("discharged_total", 20, "u32be", scale=0.1),  # Ah
)
INDIVIDUAL_FIELDS: tuple[Field, ...] = (
    Field("charge_current_limit", 96, "u16be", scale=0.1),  # A, this pack's own
    Field("discharge_current_limit", 98, "u16be", scale=0.1),  # A
)
PARAMS1_FIELDS: tuple[Field, ...] = (
    Field("bms_serial", 16, "str", count=30),  # BMS model and serial
    Field("bms_date", 46, "u16be", count=3),  # year, month, day
    Field("pack_serial", 52, "str", count=30),
    Field("pack_date", 82, "u16be", count=3),
)
PRODUCT_FIELDS: tuple[Field, ...] = (
    Field("model_id", 0, "u16be"),
    Field("hardware_revision", 2, "u16be"),
    Field("firmware", 4, "u16be", count=3),  # major, minor, patch
    Field("model", 12, "str", count=16),
    Field("project", 28, "str", count=16),
)

# Fault flags are bits 0-31, alarm flags bits 32-63 (DSB ``parse_protection_and_alarms``).
#: fault bits (and the alarm flags' failure bits) -> alarm (level 2)
PROTECTIONS: dict[int, str] = {
    0: "high_cell_voltage", 1: "low_cell_voltage", 2: "high_voltage", 3: "low_voltage",
    4: "high_charge_current", 5: "high_charge_current",  # charge overcurrent 1 and 2
    6: "high_discharge_current", 7: "high_discharge_current",  # discharge overcurrent 1, 2
    8: "high_charge_temperature", 9: "low_charge_temperature",
    10: "high_temperature", 11: "low_temperature",  # cells while discharging
    12: "high_internal_temperature",  # MOSFET
    13: "high_temperature", 14: "low_temperature",  # ambient
    15: "cell_imbalance", 16: "cell_imbalance",  # cell voltage, temperature difference (DSB)
    17: "low_soc", 18: "short_circuit",
    19: "internal_failure", 20: "internal_failure",  # cell offline, temperature sensor
    21: "internal_failure", 22: "internal_failure",  # charge / discharge MOSFET fault
    23: "internal_failure", 24: "internal_failure",  # current limiting anomaly, aerosol
    26: "internal_failure",  # AFE communication
    27: "high_discharge_current",  # reverse connection protection (DSB)
    48: "internal_failure", 49: "internal_failure",  # alarm flags: EEPROM fault, RTC abnormal
}  # fmt: skip
#: alarm-flag bits -> alarm (level 1)
WARNINGS: dict[int, str] = {
    32: "high_cell_voltage", 33: "low_cell_voltage", 34: "high_voltage", 35: "low_voltage",
    36: "high_charge_current", 37: "high_discharge_current",
    38: "high_charge_temperature", 39: "low_charge_temperature",
    40: "high_temperature", 41: "low_temperature", 42: "high_internal_temperature",
    43: "high_temperature", 44: "low_temperature",  # ambient
    45: "cell_imbalance", 46: "cell_imbalance",  # voltage, temperature difference
    47: "low_soc",
}  # fmt: skip

FRAMING = ModbusRtu(functions=(FN_INDIVIDUAL, FN_READ), addresses=(1, 255),
                    long_functions=(FN_INDIVIDUAL, FN_READ))  # fmt: skip


def read_request(address: int, part: str) -> bytes:
    """The read of ``part``'s window from the pack at ``address`` (no data, n = 0)."""
    fn, start, size = WINDOWS[part]
    body = bytes((address, fn)) + start.to_bytes(2, "big") + (start + size).to_bytes(2, "big")
    return modbus_frame(body + b"\0\0")


def firmware_text(value: int) -> str:
    """The status's firmware word: ``major.minor``, or one number when the master forwards it."""
    return f"{value >> 8}.{value & 0xFF}" if value >= 0x100 else str(value)


class Family(Plugin):
    """JBD UP series: pack status (and params2, the master's own limits) every cycle."""

    info = INFO
    framing = FRAMING
    #: DSB waits 1.5 s: "it usually takes 0.3-0.6 s to receive a response"
    reply_timeout: ClassVar[float] = 1.5
    layouts: ClassVar[Mapping[str, Layout]] = {
        STATUS: Layout(STATUS_FIELDS, DATA_AT, -2, mode="cursor"),
        PARAMS2: Layout(PARAMS2_FIELDS, DATA_AT, -2),
        INDIVIDUAL: Layout(INDIVIDUAL_FIELDS, DATA_AT, -2),
        PARAMS1: Layout(PARAMS1_FIELDS, DATA_AT, -2),
        PRODUCT: Layout(PRODUCT_FIELDS, DATA_AT, -2),
    }
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """Status (required), and where ``extended_reads`` says so the optional reads.

        Params2 and the master's individual status every cycle, params1 and product once (the
        poller asks a read done once again until it has been answered).
        """
        status = Query(STATUS, read_request(address, STATUS))
        wanted = self.options["extended_reads"]
        if wanted == "none" or (wanted == "master" and address != MASTER):
            return (status,)
        every = [status, Query(PARAMS2, read_request(address, PARAMS2), required=False)]
        if address == MASTER:
            every.append(Query(INDIVIDUAL, read_request(address, INDIVIDUAL), required=False))
        return (
            *every,
            Query(PARAMS1, read_request(address, PARAMS1), every=0, required=False),
            Query(PRODUCT, read_request(address, PRODUCT), every=0, required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part: replies repeat their request's function, start and end.

        Raises:
            FrameError: a window this family does not read, or not the request's
                ("unexpected").

        """
        part = PARTS.get((payload[1], payload[2] << 8 | payload[3]))
        if part is None:
            raise FrameError(f"{self.name}: reply for an unknown window", payload,
                             kind="unexpected")  # fmt: skip
        if request is not None and request[HEAD] != payload[HEAD]:
            raise FrameError(f"{self.name}: reply for another window than asked", payload,
                             kind="unexpected")  # fmt: skip
        return part, 0

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Join the flag words; the status's FETs and address.

        Raises:
            FrameError: a status without cells, or with an SoC above 100 % ("malformed").

        """
        if part == STATUS:
            if not fields["cells"]:
                raise FrameError(f"{self.name}: no cells", payload)
            if fields["status_soc"] > 100.0:
                raise FrameError(f"{self.name}: SoC {fields['status_soc']:g} %", payload)
            fields["address"] = payload[0]
            fields["flag_bits"] = fields["fault_flags"] | fields["alarm_flags"] << 32
            fields["charge_fet"] = bool(fields["mosfet_flags"] & FET_CHARGE)
            fields["discharge_fet"] = bool(fields["mosfet_flags"] & FET_DISCHARGE)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the status (required) and the optional reads to state fields.

        Raises:
            FrameError: no status ("truncated").

        """
        require(parts, STATUS)
        status = parts[STATUS]
        cells = list(status["cells"])
        soc = status["status_soc"]
        fine = parts.get(PARAMS2, {}).get("soc")
        if fine is not None and fine <= 100.0 and abs(fine - soc) < SOC_AGREEMENT:
            soc = fine
        limits: Mapping[str, Any] = status
        if status["address"] == MASTER:  # its status carries the bank's limits
            limits = parts.get(INDIVIDUAL, {})
        alarms = graded_alarms(status["flag_bits"], PROTECTIONS, WARNINGS)
        return {
            "voltage": status["voltage"],
            "current": status["current"],
            "soc": soc,
            "soh": float(min(status["soh"], 100)),
            "capacity": status["capacity"],
            "remaining": status["remaining"],
            "cycles": status["cycles"],
            "cells": cells,
            "balancing": bits(status["balancing"], len(cells)),
            "temperatures": list(status["temperatures"]),
            "mosfet_temperature": status["mosfet_temperature"],
            "charge_fet": status["charge_fet"],
            "discharge_fet": status["discharge_fet"],
            "bms_cvl": status["charge_voltage_limit"],
            "bms_ccl": limits.get("charge_current_limit"),
            "bms_dcl": limits.get("discharge_current_limit"),
            "alarms": alarms,
            "hardware": self.hardware(status, parts.get(PRODUCT, {}), parts.get(PARAMS1, {})),
            "serial": str(status["pack_serial"])[:64],
        }

    def hardware(self, status: Mapping[str, Any], product: Mapping[str, Any],
                 params1: Mapping[str, Any]) -> str:  # fmt: skip
        """Product (or title and cell count) and firmware version, then the BMS serial."""
        if product:
            name = " ".join(t for t in (product["project"], product["model"]) if t) or self.title
            text = f"{name} fw {'.'.join(str(v) for v in product['firmware'])}"
        else:
            text = f"{self.title} {len(status['cells'])}S fw {firmware_text(status['firmware'])}"
        serial = params1.get("bms_serial")
        return f"{text} (BMS {serial})" if serial else text
