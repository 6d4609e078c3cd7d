r"""Daren 485 (DR-JC03, DR48100JC-03, Tian Power, Nielftor ... packs) over RS485: DR-1363 ASCII.

Frames, both ways, as Pylontech's (YD/T 1363.1): ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM
``\r``, every byte between SOI and CHKSUM as two uppercase hex digits; VER 0x22, CID1 0x4A; in a
request CID2 is the service, in a reply the RTN code (0 = normal). LENGTH = LCHKSUM nibble + LENID
(INFO characters); CHKSUM = 65536 minus the sum of the ASCII characters after ``~``. The toolkit's
:class:`~bmsbank.native.spec.AsciiHex` checks both. A request's COMMAND INFO is written with
:class:`Service` templates (``ADR`` = the pack's address), so the KS48100 family
(:mod:`..ks48100.family`) is this class with other templates and other start bytes.

Services read (CID2, COMMAND INFO -> reply part):

- 0x42 ``01`` -> ``realtime``: DATAFLAG, SoC (0.01 %), pack V (0.01 V), cell count m, m cells
  (mV), ambient, pack-average and MOS temperature (s16 0.1 °C), sensor count n, n cell-sensor
  temperatures, current (s16 0.01 A, + = charge), internal resistance, SoH (%, unscaled), a
  "user-defined number", full-charge and remaining capacity (0.01 Ah), cycles, then the voltage,
  current, temperature, alarm and FET status words, per-cell OV/UV protection and alarm masks and
  the balancing mask of cells 1-16; newer firmware appends the balancing mask of cells 17-32, the
  masks of cells 17-32, a machine-status byte and an I/O-status word (13 bytes, kept as ``tail``).
  Every cycle; also the request ``bmsbank scan`` identifies the family with.
- 0x47 ``01`` -> ``params``: cell limits, charge current limit (0.01 A), cell count, design
  capacity, balancing mode, product and BMS barcodes (65 bytes). Every 60 cycles.
- 0xB0 ``ADR 01 04 FF 00`` -> ``capacity`` (module 4): remaining, full and design capacity, total
  charged/discharged Ah and energy. Every 60 cycles (not needed for the state).
- 0xB0 ``ADR 01 03 FF 00`` -> ``serial`` (module 3): pack serial, product id, BMS id (30 ASCII
  bytes each), birth date, manufacturer. Once.
- 0x51 -> ``maker``: hardware type, product code, project code (10 ASCII bytes each), software
  version (3 bytes), more bytes on some firmware (35 or 37 in all). Once.

State: the n sensor temperatures are the pack's temperatures, the MOS temperature its MOSFET
temperature (ambient and pack average are decoded, not in the state); balancing from the masks;
``bms_ccl`` is the 0x47 charge current limit (DSB uses it for both directions: no discharge limit
is reported, so none is given); ``serial`` is the B0 pack serial, else the B0 BMS id, else the
0x47 BMS barcode; ``hardware`` the title and the 0x51 codes and version.

B0 replies repeat the service, group, operation, module, function id and length before their
data, so they say what they are; the others do not. :meth:`Family.identify` takes the part from
the request when given; for a bare reply (the decode CLI) it takes the one part whose shape fits
INFO: the counts of a realtime reply walk to its length (at most the 13 newer bytes more; with
the request any more), params is 65 bytes, maker 33-40, B0 module 3 at least 119 and module 4 at
least 24. A reply that fits no part (or, bare, several) is malformed, one that fits another part
than the request's is unexpected, one with RTN != 0 is malformed naming the RTN.

Sources (facts only, no code copied):

- BASEN = "BASEN Energy Storage BMS Communication Protocol" (cpttinkering/daren-485
  Docs/BMS-BASEN_Energy-Storage-protocol-En.pdf): frame, LENGTH and CHKSUM (§3-4), 9600 or
  19200 8N1, ADR 0-15 by dial switch, the SU waits 500 ms for a reply, "charging is positive",
  the 0x42 layout (Table 7, through the cell balance state) and every status bit (Table 8),
  COMMAND GROUP "fixed to 01H" for 0x42.
- CPT = cpttinkering/daren-485 README.md: services 0x42/0x47/0x4F/0x51/0x83/0xB0 with captured
  request/reply pairs (tests/test_daren_485.py) and the layouts read by decompiling the vendor
  tool: the 13 newer bytes, the 0x47, 0x51 and B0 module 3/4 layouts.
- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/daren_485.py
  (``get_realtime_data``, ``get_cells_params``, ``get_cap_params``, ``get_serial``,
  ``create_command_*``): the same layouts; its commit 4f30690 (PR #274, "Tian-Power BMS: use
  fixed 0x01 for COMMAND INFO per protocol") sends 01 for 0x42/0x47 at every address, as BASEN
  says and as the Tian notes' request for address 2 shows; the B0 group stays the address (CPT,
  DSB, M5); ``dbus-serialbattery.py`` tries 9600, then 19200 (issue #262: a PAPool pack at 9600).
- M5 = m0n5t3r/esphome-daren-bms (tests.cpp captures of a Nielftor NIE-JC48100 at 9600,
  protocol.cpp ``unpack_*``): the same offsets; its B0 module 4 reply carries a function length
  of 0x12 (cpttinkering's 0x00: the byte is not checked).
- Tian Power notes: wire67/esphome_sacredsun_rs485 README.md (a 15-cell SacredSun pack at 9600).

Where sources disagree:

- FET status word: BASEN Table 8 says bit 0 = discharge MOS on, bit 1 = charge MOS on; DSB reads
  bit 0 as the charge FET and bit 1 as the discharge FET. Every public capture has both FETs on
  (0x0023 or 0x1023), so none decides; the default follows the vendor document and the port
  option ``swap_fets`` reads it as DSB does.
- Alarm status bits 5/6 are "LED/buzzer alarm enable" in BASEN; DSB counts them as internal
  failures. They are settings, not alarms: left out. DSB's voltage-status bits 13 (blown fuse)
  and 14 (cell-difference protection) are not in BASEN's table (reserved) but come from the
  vendor tool: kept (internal failure, cell imbalance).
- Ambient over-temperature: DSB raises the internal-temperature alarm for it as for the MOSFET;
  so does this family (the "ambient" sensor sits on the BMS board).
- Link speed: see ``__init__.py`` (9600 by default, 19200 on many packs).
- Current sign: BASEN's + = charge is confirmed by captures whose current-status word says which
  way the current flows (bit 0 charging with +1.19 A, bit 1 discharging with -11.16 A).

No writes: no public driver has any for this BMS (none declared).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import AsciiHex, Field, Layout
from bmsbank.schema import WARNING
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    alarms_from_bits,
    ascii_hex_frame,
    bits,
    counted_length,
    require,
)
from bmsbank.services.poller.plugins.daren_485 import INFO

VER = 0x22
ADR = -1  # in a COMMAND INFO template: the pack's address
INFO_AT = 6  # payload: VER ADR CID1 CID2 LENGTH(2) INFO
RTN_OK = 0x00
#: RTN code -> meaning (BASEN Table 3; 0x90/0x91 from DSB's ``CID2_decode``)
RTN: dict[int, str] = {
    0x01: "VER error", 0x02: "CHKSUM error", 0x03: "LCHKSUM error", 0x04: "CID2 invalid",
    0x05: "command format error", 0x06: "invalid data", 0x90: "ADR error",
    0x91: "battery communication error",
}  # fmt: skip
REALTIME, PARAMS, CAPACITY, SERIAL, MAKER = "realtime", "params", "capacity", "serial", "maker"
SERVICE_B0 = 0xB0
MODULE_MFG, MODULE_CAP = 3, 4
SETTINGS_EVERY = 60  # cycles between reads of the limits and the lifetime counters


@dataclass(frozen=True)
class Service:
    """One request: its CID1, its CID2 and its COMMAND INFO (``ADR``: the pack's address)."""

    cid1: int
    cid2: int
    info: tuple[int, ...] = ()

    def command_info(self, address: int) -> bytes:
        """The COMMAND INFO bytes for the pack at ``address``."""
        return bytes(address if b == ADR else b for b in self.info)

    @property
    def module(self) -> int | None:
        """The B0 module this request reads (None for other services)."""
        return self.info[2] if self.cid2 == SERVICE_B0 and len(self.info) > 2 else None


#: B0 replies begin with the request they answer
ECHO: tuple[Field, ...] = (
    Field("service", 0, "u8"),
    Field("group", 1, "u8"),
    Field("operation", 2, "u8"),
    Field("module", 3, "u8"),
    Field("function", 4, "u8"),
    Field("function_length", 5, "u8"),  # 0x00 or the data length: never checked
)
#: 0x42 INFO: counts, then as many values as they say (BASEN Table 7, CPT)
REALTIME_FIELDS: tuple[Field, ...] = (
    Field("dataflag", 0, "u8"),
    Field("soc", 0, "u16be", scale=0.01),  # %
    Field("voltage", 0, "u16be", scale=0.01),  # V
    Field("cell_count", 0, "u8"),  # m
    Field("cells", 0, "u16be", scale=0.001, count_from="cell_count"),  # V
    Field("ambient_temperature", 0, "s16be", scale=0.1),  # °C
    Field("pack_temperature", 0, "s16be", scale=0.1),  # °C, the average
    Field("mosfet_temperature", 0, "s16be", scale=0.1),  # °C
    Field("sensor_count", 0, "u8"),  # n
    Field("temperatures", 0, "s16be", scale=0.1, count_from="sensor_count"),  # °C
    Field("current", 0, "s16be", scale=0.01),  # A, + = charge
    Field("resistance", 0, "u16be", scale=0.1),  # pack internal resistance (unit unknown)
    Field("soh", 0, "u16be"),  # %, unscaled
    Field("user_defined", 0, "u8"),  # "user-defined number"; 1 in every capture
    Field("capacity", 0, "u16be", scale=0.01),  # Ah, full charge
    Field("remaining", 0, "u16be", scale=0.01),  # Ah
    Field("cycles", 0, "u16be"),
    Field("voltage_status", 0, "u16be"),
    Field("current_status", 0, "u16be"),  # bit 0 charging, bit 1 discharging, protections
    Field("temperature_status", 0, "u16be"),
    Field("alarm_status", 0, "u16be"),
    Field("fet_status", 0, "u16be"),
    Field("cell_ov_protection", 0, "u16be"),  # bit i: cell i + 1 (cells 1-16)
    Field("cell_uv_protection", 0, "u16be"),
    Field("cell_ov_alarm", 0, "u16be"),
    Field("cell_uv_alarm", 0, "u16be"),
    Field("balance_low", 0, "u16be"),  # cells 1-16 balancing
    Field("tail", 0, "u8", count=0),  # newer firmware: see REALTIME_EXTRA
)
#: bytes of the realtime INFO after the sensor temperatures up to the status words
REALTIME_AFTER_SENSORS = 13
#: the status words and masks every firmware sends (BASEN Table 7 ends with them)
REALTIME_STATUS = 20
#: bytes newer firmware appends (CPT): balancing 17-32, four masks 17-32, machine, I/O status
REALTIME_EXTRA = 13
#: the realtime INFO walk: (bytes before a count, bytes per counted item), twice
REALTIME_COUNTS = ((5, 2), (6, 2))
PARAMS_FIELDS: tuple[Field, ...] = (
    Field("dataflag", 0, "u8"),
    Field("cell_high_limit", 1, "u16be", scale=0.001),  # V
    Field("cell_low_limit", 3, "u16be", scale=0.001),  # V
    Field("charge_current_upper", 9, "u16be", scale=0.01),  # A
    Field("param_cells", 15, "u16be"),
    Field("charge_current_limit", 17, "u16be", scale=0.01),  # A
    Field("design_capacity", 19, "u16be", scale=0.01),  # Ah
    Field("balance_mode", 23, "u16be"),
    Field("product_barcode", 25, "str", count=20),
    Field("bms_barcode", 45, "str", count=20),
)
PARAMS_LENGTH = 65
CAPACITY_FIELDS: tuple[Field, ...] = (
    *ECHO,
    Field("remaining", 6, "u16be", scale=0.01),  # Ah
    Field("capacity", 8, "u16be", scale=0.01),  # Ah, full charge
    Field("design_capacity", 10, "u16be", scale=0.01),  # Ah
    Field("charged_total", 12, "u32be"),  # Ah
    Field("discharged_total", 16, "u32be"),  # Ah
    # kWh: 0.1 fits M5's capture (237 Ah / 12.9 kWh charged at 52 V); DSB divides by 100
    Field("charged_energy", 20, "u16be", scale=0.1),
    Field("discharged_energy", 22, "u16be", scale=0.1),
)
CAPACITY_LENGTH = 24
SERIAL_FIELDS: tuple[Field, ...] = (
    *ECHO,
    Field("pack_serial", 6, "str", count=30),
    Field("product_id", 36, "str", count=30),
    Field("bms_id", 66, "str", count=30),
    Field("born", 96, "u8", count=3),  # year - 2000, month, day (0xFF: not set)
    Field("manufacturer", 99, "str", count=20),
)
SERIAL_LENGTH = 119
MAKER_FIELDS: tuple[Field, ...] = (
    Field("hardware_type", 0, "str", count=10),
    Field("product_code", 10, "str", count=10),
    Field("project_code", 20, "str", count=10),
    Field("software", 30, "u8", count=3),
)
MAKER_LENGTHS = range(33, 41)  # 35 (CPT) and 37 (M5) bytes seen

# Status words -> alarms: protections (level 2) and alarms (level 1) per word (BASEN Table 8;
# the bits BASEN reserves but the vendor tool uses, from DSB).
VOLTAGE_PROTECTIONS: dict[int, str] = {
    0: "high_cell_voltage", 1: "low_cell_voltage", 2: "high_voltage", 3: "low_voltage",
    13: "internal_failure",  # blown fuse (DSB)
    14: "cell_imbalance",  # cell voltage difference protection (DSB)
}  # fmt: skip
VOLTAGE_WARNINGS: dict[int, str] = {
    4: "high_cell_voltage", 5: "low_cell_voltage", 6: "high_voltage", 7: "low_voltage",
    8: "cell_imbalance",
}  # fmt: skip
CURRENT_PROTECTIONS: dict[int, str] = {
    2: "high_charge_current", 3: "short_circuit", 4: "high_discharge_current",
    5: "high_discharge_current",  # discharge overcurrent 1 and 2
}  # fmt: skip
CURRENT_WARNINGS: dict[int, str] = {6: "high_charge_current", 7: "high_discharge_current"}
TEMPERATURE_PROTECTIONS: dict[int, str] = {
    0: "high_charge_temperature", 1: "low_charge_temperature", 2: "high_temperature",
    3: "low_temperature", 4: "high_internal_temperature",  # ambient (board) over-temperature
    5: "low_temperature", 6: "high_internal_temperature",  # ambient under, MOS over
}  # fmt: skip
TEMPERATURE_WARNINGS: dict[int, str] = {
    8: "high_charge_temperature", 9: "low_charge_temperature", 10: "high_temperature",
    11: "low_temperature", 12: "high_internal_temperature", 13: "low_temperature",
    14: "high_internal_temperature",
}  # fmt: skip
#: the alarm status word; bits 5/6 are the LED and buzzer settings, not alarms
STATUS_PROTECTIONS: dict[int, str] = {
    1: "internal_failure", 2: "internal_failure",  # charge MOS damage, SD card failure
    3: "internal_failure", 4: "internal_failure",  # SPI, EEPROM failure
    7: "low_soc",  # "low battery alarm" (DSB raises it as a protection)
    8: "high_internal_temperature",  # MOS over-temperature protection
    10: "internal_failure", 11: "internal_failure",  # current limiter, sampling failure
    12: "internal_failure", 13: "internal_failure",  # cell, NTC failure
    14: "internal_failure", 15: "internal_failure",  # charge, discharge MOS failure
}  # fmt: skip
STATUS_WARNINGS: dict[int, str] = {0: "cell_imbalance", 9: "high_internal_temperature"}
#: status word field -> (protection bits, alarm bits)
ALARM_WORDS: dict[str, tuple[Mapping[int, str], Mapping[int, str]]] = {
    "voltage_status": (VOLTAGE_PROTECTIONS, VOLTAGE_WARNINGS),
    "current_status": (CURRENT_PROTECTIONS, CURRENT_WARNINGS),
    "temperature_status": (TEMPERATURE_PROTECTIONS, TEMPERATURE_WARNINGS),
    "alarm_status": (STATUS_PROTECTIONS, STATUS_WARNINGS),
}
#: FET status bits (BASEN Table 8); ``swap_fets`` exchanges them
FET_DISCHARGE_BIT, FET_CHARGE_BIT = 0, 1


def frame(soi: bytes, address: int, cid1: int, cid2: int, info: bytes = b"") -> bytes:
    """Build a frame (a request: ``cid2`` = service; a reply: ``cid2`` = RTN)."""
    return ascii_hex_frame(soi, bytes((VER, address, cid1, cid2)), info)


def realtime_fits(info: bytes, exact: bool) -> bool:
    """Whether ``info`` has a realtime reply's shape (``exact``: no bytes beyond the known)."""
    counted = counted_length(info, REALTIME_COUNTS)
    if counted < 0:
        return False
    least = counted + REALTIME_AFTER_SENSORS + REALTIME_STATUS
    return least <= len(info) and (not exact or len(info) <= least + REALTIME_EXTRA)


def b0_fits(info: bytes, module: int, length: int) -> bool:
    """Whether ``info`` is a B0 reply of ``module`` with at least ``length`` bytes."""
    return len(info) >= length and info[0] == SERVICE_B0 and info[3] == module


def fits(part: str, info: bytes, exact: bool) -> bool:
    """Whether ``info`` has the shape of ``part``'s reply.

    ``exact`` (no request): a realtime reply ends with the known bytes; with its request, bytes
    after them are allowed.
    """
    if part == REALTIME:
        return realtime_fits(info, exact)
    if part == PARAMS:
        return len(info) == PARAMS_LENGTH
    if part == CAPACITY:
        return b0_fits(info, MODULE_CAP, CAPACITY_LENGTH)
    if part == SERIAL:
        return b0_fits(info, MODULE_MFG, SERIAL_LENGTH)
    return len(info) in MAKER_LENGTHS


class Family(Plugin):
    """Daren 485: realtime every cycle, limits and capacities every 60, serial and maker once."""

    info = INFO
    framing = AsciiHex()  # replies start with "~"
    #: the SU waits 500 ms for a reply (BASEN §2), which then takes up to 0.27 s at 9600 Bd
    reply_timeout: ClassVar[float] = 1.0
    layouts: ClassVar[Mapping[str, Layout]] = {
        REALTIME: Layout(REALTIME_FIELDS, INFO_AT, mode="cursor"),
        PARAMS: Layout(PARAMS_FIELDS, INFO_AT),
        CAPACITY: Layout(CAPACITY_FIELDS, INFO_AT),
        SERIAL: Layout(SERIAL_FIELDS, INFO_AT),
        MAKER: Layout(MAKER_FIELDS, INFO_AT),
    }
    address_at = 1  # the reply's ADR echoes the request's
    #: the byte every request starts with
    request_soi: ClassVar[bytes] = b"~"
    #: part -> the request that reads it (CPT, DSB; COMMAND GROUP 01 per BASEN and DSB #274)
    services: ClassVar[Mapping[str, Service]] = {
        REALTIME: Service(0x4A, 0x42, (0x01,)),
        PARAMS: Service(0x4A, 0x47, (0x01,)),
        CAPACITY: Service(0x4A, SERVICE_B0, (ADR, 0x01, MODULE_CAP, 0xFF, 0x00)),
        SERIAL: Service(0x4A, SERVICE_B0, (ADR, 0x01, MODULE_MFG, 0xFF, 0x00)),
        MAKER: Service(0x4A, 0x51),
    }

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        #: (CID2, B0 module or None) -> the part a request reads
        self.part_of = {(s.cid2, s.module): part for part, s in self.services.items()}
        #: the CID1 values a reply may carry (a reply repeats its request's)
        self.cid1s = frozenset(s.cid1 for s in self.services.values())
        swap = self.options["swap_fets"]
        self.charge_bit = FET_DISCHARGE_BIT if swap else FET_CHARGE_BIT
        self.discharge_bit = FET_CHARGE_BIT if swap else FET_DISCHARGE_BIT

    def request(self, part: str, address: int) -> bytes:
        """The request that reads ``part`` from the pack at ``address``."""
        s = self.services[part]
        return frame(self.request_soi, address, s.cid1, s.cid2, s.command_info(address))

    def queries(self, address: int) -> Sequence[Query]:
        """Realtime (required) every cycle, then the optional reads (read-only, all)."""
        return (
            Query(REALTIME, self.request(REALTIME, address)),
            Query(PARAMS, self.request(PARAMS, address), every=SETTINGS_EVERY, required=False),
            Query(CAPACITY, self.request(CAPACITY, address), every=SETTINGS_EVERY, required=False),
            Query(SERIAL, self.request(SERIAL, address), every=0, required=False),
            Query(MAKER, self.request(MAKER, address), every=0, required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part: the request's service when given, else the one part whose shape fits.

        Raises:
            FrameError: not a DR-1363 reply of this family ("unexpected"), an RTN error code,
                INFO that fits no part or (bare) several ("malformed"), another part's reply
                to this request ("unexpected").

        """
        if len(payload) < INFO_AT or payload[0] != VER or payload[2] not in self.cid1s:
            raise FrameError(f"{self.name}: not a {self.title} reply", payload, kind="unexpected")
        if payload[3] != RTN_OK:
            meaning = RTN.get(payload[3], "unknown code")
            raise FrameError(f"{self.name}: BMS answered RTN 0x{payload[3]:02X} ({meaning})",
                             payload)  # fmt: skip
        info = payload[INFO_AT:]
        shapes = [p for p in self.layouts if fits(p, info, exact=request is None)]
        if request is None:
            if len(shapes) != 1:
                raise FrameError(f"{self.name}: {len(info)}-byte INFO fits "
                                 f"{' and '.join(shapes) or 'no reply'}", payload)  # fmt: skip
            return shapes[0], 0
        part = self.requested(request)
        if part is None:
            raise FrameError(f"{self.name}: reply to an unknown request", payload,
                             kind="unexpected")  # fmt: skip
        if part not in shapes:
            raise FrameError(f"{self.name}: {len(info)}-byte INFO is not a {part} reply", payload,
                             kind="unexpected" if shapes else "malformed")  # fmt: skip
        return part, 0

    def requested(self, request: bytes) -> str | None:
        """The part ``request`` reads (None: not a request of this family).

        Raises:
            FrameError(kind="hex"): ``request`` is not an ASCII-hex frame.

        """
        req = self.framer.payload(request)
        if len(req) < INFO_AT:
            return None
        module = req[INFO_AT + 2] if req[3] == SERVICE_B0 and len(req) > INFO_AT + 2 else None
        return self.part_of.get((req[3], module))

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Join the balancing masks and the software version; reject an SoC above 100 %.

        Raises:
            FrameError: an SoC above 100 % ("malformed").

        """
        if part == REALTIME:
            if fields["soc"] > 100.0:
                raise FrameError(f"{self.name}: SoC {fields['soc']:g} %", payload)
            tail = fields["tail"]
            high = tail[0] << 8 | tail[1] if len(tail) >= 2 else 0
            fields["balancing"] = fields["balance_low"] | high << 16
        elif part == MAKER:
            fields["version"] = ".".join(f"{b:02d}" for b in fields["software"])
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the realtime reply (required) and the optional ones to state fields.

        Raises:
            FrameError: no realtime reply ("truncated").

        """
        require(parts, REALTIME)
        rt = parts[REALTIME]
        cells = list(rt["cells"])
        alarms: dict[str, int] = {}
        for word, (protections, warnings) in ALARM_WORDS.items():
            found = alarms_from_bits(rt[word], warnings, WARNING)
            for name, level in (*found.items(), *alarms_from_bits(rt[word], protections).items()):
                alarms[name] = max(alarms.get(name, 0), level)
        fets = rt["fet_status"]
        params = parts.get(PARAMS, {})
        return {
            "voltage": rt["voltage"],
            "current": rt["current"],
            "soc": rt["soc"],
            "soh": float(rt["soh"]),
            "capacity": rt["capacity"],
            "remaining": rt["remaining"],
            "cycles": rt["cycles"],
            "cells": cells,
            "balancing": bits(rt["balancing"], len(cells)),
            "temperatures": list(rt["temperatures"]),
            "mosfet_temperature": rt["mosfet_temperature"],
            "charge_fet": bool(fets >> self.charge_bit & 1),
            "discharge_fet": bool(fets >> self.discharge_bit & 1),
            "bms_ccl": params.get("charge_current_limit"),
            "alarms": alarms,
            "hardware": self.hardware(parts.get(MAKER, {})),
            "serial": serial_of(parts),
        }

    def hardware(self, maker: Mapping[str, Any]) -> str:
        """The title, then the product, project and hardware codes and software version read."""
        words = [maker.get(k) for k in ("product_code", "project_code", "hardware_type")]
        text = " ".join([self.title, *(w for w in words if w)])
        return f"{text} fw {maker['version']}" if "version" in maker else text


def serial_of(parts: Mapping[str, Mapping[str, Any]]) -> str:
    """The pack serial (B0 module 3), else its BMS id, else the 0x47 BMS barcode, else ""."""
    mfg, params = parts.get(SERIAL, {}), parts.get(PARAMS, {})
    for text in (mfg.get("pack_serial"), mfg.get("bms_id"), params.get("bms_barcode")):
        if text:
            return str(text)
    return ""
