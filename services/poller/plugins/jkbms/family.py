"""JK BMS JK-B*A*S / JK-BD* active balancers on the older UART protocol (``4E 57`` frames).

The 4-pin "GPS"/"RS485" socket is 3.3 V UART-TTL at 115200 baud 8N1; the host asks, one BMS
answers. Frames, both ways, big endian: ``4E 57 | LEN u16 | terminal (4) | CMD | SRC | TYPE |
INFO | record (4) | 68 | 00 00 sum16``. LEN counts from itself to the end (total = LEN + 2); the
check is ``00 00`` and the u16 sum of every byte from 4E through the 0x68 end flag. A reply echoes
CMD, carries SRC 0 and TYPE 1, and its INFO is a stream of ``id value`` entries. Public sources
(repository + path; "SPEC" is JK's "Communication protocol between monitoring platform and BMS"
V2.5, syssi/esphome-jk-bms docs/Communication protocol between monitoring platform and BMS.pdf):

- framing, LEN, checksum, CMD 0x06 read all / 0x03 read, SRC (3 = PC), TYPE, end flag 0x68: SPEC
  4.2; syssi/esphome-jk-bms components/jk_modbus/jk_modbus.cpp (``chksum``, ``read_registers``);
  mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/jkbms.py (``command_status``, the
  ``sum(data[0:-4])`` check); recomputed on every capture in tests/test_jkbms.py. The check's
  high word must be 00 00 (SPEC: "CRC16 not enabled, fill 0"; jk_modbus.cpp sums those bytes in
  too, so it fails there as well; jkbms.py ignores them). The 0x68 end flag is checked here (a
  reply without it is "malformed"); jk_modbus.cpp does not check it.
- the read-all request ``4E 57 00 13 00 00 00 00 06 03 00 00 00 00 00 00 68 00 00 01 29``: SPEC
  example, esphome-jk-bms docs/RS485 Communication example.pdf, jkbms.py ``command_status``.
  jblance/powermon powermon/protocols/jkserial.py sends CMD 0x03 with ID 0 and gets the same dump,
  0x03 echoed: both are accepted as a read-all reply.
- every ID's size (no ID but 0x79 has a length byte, so an unknown ID ends decoding): SPEC 4.3,
  esphome-jk-bms docs/protocol-design-uart-ttl-gps-port.md; checked by walking every capture.
  0xBB-0xBF are write-only commands listed for completeness (SPEC); 0xB8, 0xB9, 0xBA and 0xC0 are
  absent on NW_1_0_0 firmware (RS485 Communication example.pdf).
- 0x79 ``L`` then L/3 records ``cell no, mV u16``; 0x83 0.01 V; 0x85 SoC %; 0x87 cycles; 0x8A
  cells; 0xAA capacity Ah; 0x97 / 0x99 discharge / charge over-current protection A (used as the
  BMS's own current limits, as jkbms.py ``MAX_BATTERY_(DIS)CHARGE_CURRENT`` does): SPEC, PD.
- 0x8B warning bits 0-13 and 0x8C status bits (0 charge FET, 1 discharge FET, 2 balancer, 3
  "battery dropped"): SPEC, esphome-jk-bms components/jk_bms/jk_bms.cpp. Bit 3 is 1 only on NW
  firmware and 0 on every newer capture while working: never an alarm.
- current 0x84, keyed on 0xC0 protocol version (SPEC history "V2.4 add 0xC0 to redefine current"):
  version 1: bit 15 set = charging, bits 0-14 in 10 mA (sign-magnitude, not two's complement);
  version 0 or no 0xC0 (NW_1_0_0): (10000 - raw) x 10 mA, + = charge (SPEC; raw 10000 = 0 A in
  RS485 Communication example.pdf). Implementations differ: esphome jk_bms.cpp ``get_current_``
  reads 0xC0 at a fixed offset and returns 0 A for version 0; jkbms.py ignores 0xC0 and always
  applies the sign bit (a version-0 BMS at rest would read -100 A); jkserial.py (powermon and
  jblance/mpp-solar) decodes the sign bit only. No version-0 capture with current exists, so the
  port option ``current_encoding`` can force either reading ("auto" follows 0xC0).
- temperatures 0x80 MOSFET, 0x81 box (T1), 0x82 battery (T2), 1 °C: SPEC says "> 100 is negative,
  101 = -1 (100 benchmark)"; dbus-serialbattery's ice-bath test against the JK app (Louisvdw/
  dbus-serialbattery issue #354) gave ``t if t < 99 else 100 - t`` (100 = 0 °C, 101 = -1 °C);
  esphome jk_bms.cpp uses ``99 - t`` above 99 (100 = -1, 101 = -2; issue #339 saw that in the app,
  esphome-jk-bms #23/#685 unresolved). Used here: ``t`` up to 99, ``100 - t`` from 100 on, which
  is SPEC's 101 = -1 with 100 as its "benchmark" 0 °C and the ice-bath result; +-1 °C below 0 is
  uncertain.
- no per-cell balancing flags exist in this protocol: ``balancing`` is all 0; the status bit 2
  (balancer working) is kept in the part as ``status``.

No writes: the protocol's write (CMD 0x02) needs the password frame first and is untested here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.frames import checksum
from bmsbank.native.spec import Binary, Check, Field, Layout, Tag
from bmsbank.services.poller.plugins.base import Plugin, Query, alarms_from_bits, require
from bmsbank.services.poller.plugins.jkbms import INFO

HEADER = b"\x4e\x57"
END_FLAG = 0x68
CMD_AT, TYPE_AT = 8, 10
INFO_AT = 11  # payload offset of the TLV stream
TAIL = 9  # record number (4), end flag, check value (4)
CMD_READ, CMD_READ_ALL = 0x03, 0x06
SRC_BMS, SRC_PC = 0x00, 0x03
TYPE_REQUEST, TYPE_REPLY = 0x00, 0x01
ID_ALL = 0x00
ZERO_C = 100  # raw temperature of 0 °C; above it, 100 - raw
CURRENT_ZERO_V0 = 10000  # protocol version 0: raw of 0 A
CHARGING = 0x8000  # protocol version 1: bit 15 = charging

FRAMING = Binary(
    header=HEADER,
    length_offset=2,
    length_fmt="u16be",
    length_adjust=2,
    max_length=512,
    check=Check("sum16", start=0, end=-4, at=-4, fmt="u32be"),
)


#: the read-all INFO: every ID with its size; fields only where the state needs them
TAGS: tuple[Tag, ...] = (
    Tag(0x79, prefix="u8", fields=(
        Field("cell_numbers", 0, "u8", count=0, stride=3),
        Field("cells", 1, "u16be", scale=0.001, count=0, stride=3),
    )),
    Tag(0x80, 2, (Field("mosfet_temperature", 0, "u16be"),)),  # raw, see celsius()
    Tag(0x81, 2, (Field("temperature_1", 0, "u16be"),)),  # battery box
    Tag(0x82, 2, (Field("temperature_2", 0, "u16be"),)),  # battery
    Tag(0x83, 2, (Field("voltage", 0, "u16be", scale=0.01),)),  # V
    Tag(0x84, 2, (Field("current_raw", 0, "u16be"),)),  # see amps()
    Tag(0x85, 1, (Field("soc", 0, "u8"),)),  # %
    Tag(0x86, 1),  # number of temperature sensors
    Tag(0x87, 2, (Field("cycles", 0, "u16be"),)),
    Tag(0x89, 4),  # total cycle capacity, Ah
    Tag(0x8A, 2, (Field("cell_count", 0, "u16be"),)),
    Tag(0x8B, 2, (Field("warnings", 0, "u16be"),)),
    Tag(0x8C, 2, (Field("status", 0, "u16be"),)),
    *(Tag(t, 2) for t in range(0x8E, 0x97)),  # pack/cell OVP, UVP, delays, delta: settings
    Tag(0x97, 2, (Field("discharge_overcurrent", 0, "u16be"),)),  # A
    Tag(0x98, 2),
    Tag(0x99, 2, (Field("charge_overcurrent", 0, "u16be"),)),  # A
    *(Tag(t, 2) for t in range(0x9A, 0x9D)),
    Tag(0x9D, 1),  # active balance switch
    *(Tag(t, 2) for t in range(0x9E, 0xA9)),  # temperature settings (0xA5-0xA8 s16)
    Tag(0xA9, 1),  # string count setting
    Tag(0xAA, 4, (Field("capacity", 0, "u32be"),)),  # Ah
    Tag(0xAB, 1), Tag(0xAC, 1),  # charge / discharge MOS switches (settings)
    Tag(0xAD, 2), Tag(0xAE, 1), Tag(0xAF, 1), Tag(0xB0, 2), Tag(0xB1, 1),
    Tag(0xB2, 10),  # parameter password
    Tag(0xB3, 1), Tag(0xB4, 8), Tag(0xB5, 4), Tag(0xB6, 4),
    Tag(0xB7, 15, (Field("software_version", 0, "str", count=15),)),
    Tag(0xB8, 1), Tag(0xB9, 4),  # calibration, actual Ah
    Tag(0xBA, 24, (Field("manufacturer_id", 0, "str", count=24),)),  # the id, see serial_of()
    Tag(0xBB, 1), Tag(0xBC, 1), Tag(0xBD, 1), Tag(0xBE, 2), Tag(0xBF, 2),  # commands
    Tag(0xC0, 1, (Field("protocol_version", 0, "u8"),)),
)  # fmt: skip
REQUIRED = ("cells", "mosfet_temperature", "temperature_1", "temperature_2", "voltage",
            "current_raw", "soc", "cycles", "warnings", "status", "capacity")  # fmt: skip

#: 0x8B warning bit -> alarm name (bmsbank.schema.ALARMS); 12/13 ("309_A/B protection") unmapped
WARNING_ALARMS: dict[int, str] = {
    0: "low_soc",  # low capacity
    1: "high_internal_temperature",  # MOSFET over-temperature
    2: "high_voltage",  # charge over-voltage (pack)
    3: "low_voltage",  # discharge under-voltage (pack)
    4: "high_temperature",  # battery over-temperature
    5: "high_charge_current",  # charge over-current
    6: "high_discharge_current",  # discharge over-current
    7: "cell_imbalance",  # cell voltage difference
    8: "high_temperature",  # battery box over-temperature
    9: "low_temperature",  # battery low temperature
    10: "high_cell_voltage",  # cell over-voltage
    11: "low_cell_voltage",  # cell under-voltage
}
STATUS_CHARGE, STATUS_DISCHARGE, STATUS_BALANCER = 0x01, 0x02, 0x04  # 0x08 "offline": ignored


def pack_frame(command: int, info: bytes, source: int = SRC_PC, ftype: int = TYPE_REQUEST) -> bytes:
    """Build a frame: header, LEN, terminal 0, command, source, type, ``info``, record 0, check."""
    body = bytes((command, source, ftype)) + info + bytes(4) + bytes((END_FLAG,))
    head = HEADER + (len(body) + 4 + 4 + 2).to_bytes(2, "big") + bytes(4)
    return head + body + checksum("sum16", head + body).to_bytes(4, "big")


READ_ALL = pack_frame(CMD_READ_ALL, bytes((ID_ALL,)))


def celsius(raw: int) -> int:
    """°C of a 0x80-0x82 reading: ``raw`` up to 99, ``100 - raw`` from 100 on (see above)."""
    return raw if raw < ZERO_C else ZERO_C - raw


def amps(raw: int, version: int) -> float:
    """Current [A, + = charge] of a 0x84 reading under protocol ``version`` (0xC0; 0 = absent)."""
    if version == 0:
        return (CURRENT_ZERO_V0 - raw) / 100
    magnitude = (raw & 0x7FFF) / 100
    return magnitude if raw & CHARGING else 0.0 - magnitude  # 0.0 - 0.0: no -0.0


class Family(Plugin):
    """JK BMS, 4E 57 protocol: one read-all request per cycle."""

    info = INFO
    command_gap: ClassVar[float] = 0.1  # SPEC 4.1: at least 100 ms between packets
    #: replies came 93 ms after the request (RS485 example); serialbattery waits ~0.75 s
    reply_timeout: ClassVar[float] = 1.0
    framing = FRAMING
    layouts: ClassVar[Mapping[str, Layout]] = {"all": Layout(TAGS, INFO_AT, -TAIL, mode="tlv")}
    key_at = CMD_AT
    keys: ClassVar[Mapping[int, str]] = {CMD_READ_ALL: "all", CMD_READ: "all"}

    def queries(self, address: int) -> Sequence[Query]:
        """Read everything (the protocol has no usable address: terminal number 0)."""
        return (Query("all", READ_ALL),)

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """A reply (TYPE != 0) to read / read all, ending in the 0x68 end flag.

        Raises:
            FrameError: too short or no end flag ("malformed"), a request such as our own
                echo, or another command ("unexpected").

        """
        if len(payload) < INFO_AT + TAIL or payload[-TAIL + 4] != END_FLAG:
            raise FrameError(f"{self.name}: no 0x68 end flag", payload)
        if payload[TYPE_AT] == TYPE_REQUEST:
            raise FrameError(f"{self.name}: a request, not a reply", payload, kind="unexpected")
        return super().identify(payload, request)

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Check the reply is complete; current and temperatures in A and °C.

        Raises:
            FrameError: an ID the state needs is missing ("malformed"), 0x79 is not whole
                3-byte cell records ("tlv").

        """
        missing = [name for name in REQUIRED if name not in fields]
        if missing:
            raise FrameError(f"{self.name}: reply without {', '.join(missing)}", payload)
        if not fields["cells"] or len(fields["cells"]) != len(fields["cell_numbers"]):
            raise FrameError(f"{self.name}: 0x79 is not whole cell records", payload, kind="tlv")
        version = fields.setdefault("protocol_version", 0)
        encoding = self.options["current_encoding"]
        if encoding != "auto":
            version = 1 if encoding == "sign_bit" else 0
        fields["current"] = amps(fields["current_raw"], version)
        for name in ("mosfet_temperature", "temperature_1", "temperature_2"):
            fields[name] = celsius(fields[name])
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the read-all reply to state fields (remaining = capacity x SoC: no such ID).

        Raises:
            FrameError: the reply is missing.

        """
        require(parts, "all")
        f = parts["all"]
        cells = list(f["cells"])
        capacity = float(f["capacity"])
        status = f["status"]
        ccl, dcl = f.get("charge_overcurrent"), f.get("discharge_overcurrent")
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": float(f["soc"]),
            "capacity": capacity,
            "remaining": capacity * f["soc"] / 100.0,
            "cycles": f["cycles"],
            "cells": cells,
            "balancing": [0] * len(cells),
            "temperatures": [float(f["temperature_1"]), float(f["temperature_2"])],
            "mosfet_temperature": float(f["mosfet_temperature"]),
            "charge_fet": bool(status & STATUS_CHARGE),
            "discharge_fet": bool(status & STATUS_DISCHARGE),
            "bms_ccl": float(ccl) if ccl else None,  # over-current protection, A (0: not set)
            "bms_dcl": float(dcl) if dcl else None,
            "alarms": alarms_from_bits(f["warnings"], WARNING_ALARMS),
            "hardware": f.get("software_version") or self.title,
            "serial": serial_of(f.get("manufacturer_id", "")),
        }


#: how 0xBA begins until a user sets an id (dbus-serialbattery jkbms.py strips this text)
UNSET_ID = "Input Userda"


def serial_of(manufacturer_id: str) -> str:
    """The pack's id from 0xBA ("" while it holds the factory placeholder or is absent).

    dbus-serialbattery (jkbms.py ``unique_identifier``) tells JK packs apart by this field.
    """
    text = manufacturer_id.strip()
    return "" if text.startswith(UNSET_ID) else text
