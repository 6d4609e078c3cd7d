"""LLT/JBD (Jiabaida, Xiaoxiang, Overkill) smart BMS over UART/RS485 at 9600 baud (and BLE FF00).

Frames, both directions: ``DD <b1> <b2> <len> <data...> <chk_hi> <chk_lo> 77``. A read request is
``DD A5 <reg> 00 <chk> 77``; a reply is ``DD <reg> <status> <len> <data> <chk> 77`` with status 0x00
for success (0x80: the BMS refused). The check is 0x10000 - sum(bytes[2:-3]) (big endian): for a
request it covers register and length, for a reply status, length and data.

Facts and where they were confirmed (public sources, repository + path):

- framing, checksum coverage, request bytes ``DD A5 03 00 FF FD 77`` / ``.. 04 .. FF FC ..`` /
  ``.. 05 .. FF FB ..``: mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/lltjbd.py
  (``cmd``, ``validate_packet``), syssi/esphome-jbd-bms components/jbd_bms/jbd_bms.cpp (``chksum_``
  over ``raw + 2``), patman15/aiobmsble aiobmsble/bms/jbd_bms.py (``_crc(frame[2:...])``); checked
  against the captured replies in tests/test_jbd.py.
- 0x03 basic info layout (big endian): 0 voltage u16 10 mV, 2 current s16 10 mA (+ = charge),
  4 remaining u16 10 mAh, 6 nominal capacity u16 10 mAh, 8 cycles u16, 10 production date u16,
  12 balance bits cells 1-16, 14 balance bits cells 17-32, 16 protection bits u16, 18 software
  version u8, 19 SoC u8 %, 20 FET status (bit 0 charge, bit 1 discharge), 21 cell count, 22 NTC
  count n, 23.. n x NTC u16 in 0.1 K with 0 °C = 2731: esphome-jbd-bms jbd_bms.cpp
  (``on_hardware_info_data_``), dbus-serialbattery lltjbd.py (``read_gen_data``, ``to_cell_bits``,
  ``to_fet_bits``), aiobmsble jbd_bms.py (``_FIELDS``, temperature offset 2731).
- Newer firmware appends fields after the NTCs (for example 9 bytes on a JBD-DP04S007, see
  syssi/esphome-jbd-bms docs/pdus/JBD-DP04S007L4S100A-BLE.txt); they are ignored here.
- 0x04: n x u16 cell voltages in mV; 0x05: ASCII model string: jbd_bms.cpp
  (``on_cell_info_data_``, ``on_hardware_version_data_``), lltjbd.py (``read_hardware_data``).
- protection bits 0-12: esphome-jbd-bms jbd_bms.cpp (``ERRORS``), dbus-serialbattery lltjbd.py
  (``to_protection_bits``). Mapping to :data:`bmsbank.schema.ALARMS` in :data:`PROTECTION_ALARMS`.
  Bit 12 (software FET lock) is a setting, not a fault: no alarm. Bits 13-15 are undocumented
  (esphome calls 13 "Charge timeout Close") and raise no alarm.
- The basic info has no dedicated MOSFET temperature (dbus-serialbattery only *assumes* NTC 1 sits
  on the FETs when there are several), so ``mosfet_temperature`` stays None and every NTC is
  reported in ``temperatures``.

Writes (``controls``), request ``DD 5A <reg> <len> <data> <chk> 77``, acknowledged by
``DD <reg> 00 00 00 00 77`` (status 0x80: refused):

- charge / discharge: register 0xE1 "MOS control", data ``00 XX`` (first byte: priority, 0x00 =
  end user), XX bit 0 set = charge FET off, bit 1 set = discharge FET off; both bits always
  travel together. No factory mode: the Jiabaida V19 protocol (syssi/esphome-jbd-bms
  docs/Jiabaida.communication.protocol.pdf, section 4) sends it directly, as do
  dbus-serialbattery bms/lltjbd.py (``write_charge_discharge_mos``) and esphome-jbd-bms
  jbd_bms.cpp (``change_mosfet_status``); PulseView captures ``DD 5A E1 02 00 01 FF 1C 77``
  (charge off) etc. in esphome-jbd-bms tests/components/jbd_bms/write_command_test.cpp. The BMS
  flags a software lock with protection bit 12. The plugin remembers the bits it wrote per pack
  and keeps them while no newer 0x03 has been read or bit 12 is still set; a newer 0x03 without
  bit 12 means the locks are gone (a BMS restart, the app), so it starts from none. Before its
  first write it assumes the FETs that are off while bit 12 is set are the locked ones (the
  0x03 frame does not say which FET is locked).
- balance: bit 2 "balance_en" of the EEPROM register 0x2D "func_config" (bms-tools
  JBD_REGISTER_MAP.md, mirrored in FurTrader/OverkillSolarBMS
  Comm_Protocol_Documentation/JBD_REGISTER_MAP.md; lltjbd.py ``FUNC_BALANCE_EN``): enter factory
  mode (write 0x00 = ``56 78``), read 0x2D, write it back with bit 2 changed, exit with
  0x01 = ``28 28`` (store in EEPROM) or ``00 00`` (discard) when nothing changed or a step
  failed; the sequence of lltjbd.py ``write_balancer``/``eeprom()``. Register 0xE2 "balance
  control" is a factory test of odd/even bleeders, not the switch, and is not used.
- reset_soc: register 0x0A, data ``01 00`` ("force SoC reset"; esphome-jbd-bms
  components/jbd_bms/button/__init__.py, frame ``DD 5A 0A 02 01 00 FF F3 77`` in
  write_command_test.cpp; confirmed on hardware in esphome-jbd-bms PR #139). It takes no target
  SoC: the BMS re-synchronises its own way. (0xE0 "capacity remaining" could set one, but no
  public capture shows a write to it.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import BmsBankError, ControlError, FrameError
from bmsbank.native.frames import negsum16
from bmsbank.native.spec import Field, Framing
from bmsbank.services.poller.plugins.base import (
    ControlLink,
    Layout,
    LinkStats,
    Plugin,
    Query,
    alarms_from_bits,
    bits,
    require,
)

START, END = 0xDD, 0x77
READ, WRITE = 0xA5, 0x5A
STATUS_OK, STATUS_ERROR = 0x00, 0x80
REG_BASIC, REG_CELLS, REG_HARDWARE = 0x03, 0x04, 0x05
#: register -> part name
PARTS: dict[int, str] = {REG_BASIC: "basic", REG_CELLS: "cells", REG_HARDWARE: "hardware"}
#: bytes around the data: start, first, second, length ... check (2), end
OVERHEAD = 7
DATA_AT = 4
KELVIN_0C = -273.1  # the BMS's 0 °C is 2731 x 0.1 K

#: 0x03 payload; field names equal state names where the value maps 1:1
BASIC_FIELDS: tuple[Field, ...] = (
    Field("voltage", 0, "u16be", scale=0.01),
    Field("current", 2, "s16be", scale=0.01),
    Field("remaining", 4, "u16be", scale=0.01),
    Field("capacity", 6, "u16be", scale=0.01),
    Field("cycles", 8, "u16be"),
    Field("production_date", 10, "u16be"),
    Field("balance_low", 12, "u16be"),  # cells 1-16, bit 0 = cell 1
    Field("balance_high", 14, "u16be"),  # cells 17-32
    Field("protection", 16, "u16be"),
    Field("software_version", 18, "u8"),
    Field("soc", 19, "u8"),
    Field("fet_status", 20, "u8"),
    Field("cell_count", 21, "u8"),
    Field("ntc_count", 22, "u8"),
    Field("temperatures", 23, "u16be", scale=0.1, bias=KELVIN_0C, count_from="ntc_count"),
)
#: 0x04 payload: every u16 is one cell voltage
CELL_FIELDS: tuple[Field, ...] = (Field("cells", 0, "u16be", scale=0.001, count=0),)

#: protection bit -> alarm name (bmsbank.schema.ALARMS)
PROTECTION_ALARMS: dict[int, str] = {
    0: "high_cell_voltage",  # cell overvoltage
    1: "low_cell_voltage",  # cell undervoltage
    2: "high_voltage",  # pack overvoltage
    3: "low_voltage",  # pack undervoltage
    4: "high_charge_temperature",  # charge over-temperature
    5: "low_charge_temperature",  # charge under-temperature
    6: "high_temperature",  # discharge over-temperature
    7: "low_temperature",  # discharge under-temperature
    8: "high_charge_current",  # charge overcurrent
    9: "high_discharge_current",  # discharge overcurrent
    10: "short_circuit",  # short circuit
    11: "internal_failure",  # analog front-end IC error
    # 12: FETs locked by software (a user's choice in the JBD app, not a fault): no alarm; the
    # FET bits already block charge/discharge in the bank.
}
FET_CHARGE, FET_DISCHARGE = 0x01, 0x02
SOFTWARE_LOCK_BIT = 12  # protection bit: a FET is switched off by a 0xE1 write

# -- writes (see the module docstring for the sources) --
REG_ENTER_FACTORY, REG_EXIT_FACTORY = 0x00, 0x01
REG_COMMAND = 0x0A  # one-shot commands; 0x0100 = force SoC reset
REG_FUNC_CONFIG = 0x2D  # EEPROM function bits
REG_MOS = 0xE1  # MOS control
FACTORY_KEY = b"\x56\x78"
EXIT_SAVE, EXIT_DISCARD = b"\x28\x28", b"\x00\x00"
FORCE_SOC_RESET = b"\x01\x00"
FUNC_BALANCE_EN = 0x0004
MOS_USER = 0x00  # priority byte: end user
MOS_CHARGE_OFF, MOS_DISCHARGE_OFF = 0x01, 0x02


def pack_frame(first: int, second: int, data: bytes = b"") -> bytes:
    """Build one JBD frame: ``DD first second len data chk 77``.

    Args:
        first: READ/WRITE for a request, the register for a reply.
        second: the register for a request, the status for a reply.
        data: payload (at most 255 bytes).

    Returns:
        The complete frame with its check value.

    """
    if len(data) > 0xFF:
        raise ValueError(f"JBD payload of {len(data)} bytes exceeds 255")
    head = bytes((START, first, second, len(data))) + bytes(data)
    return head + negsum16(head, 2).to_bytes(2, "big") + bytes((END,))


def read_request(register: int) -> bytes:
    """Build the read request for ``register`` (``DD A5 reg 00 chk 77``)."""
    return pack_frame(READ, register)


def write_request(register: int, data: bytes) -> bytes:
    """Build the write request of ``data`` to ``register`` (``DD 5A reg len data chk 77``)."""
    return pack_frame(WRITE, register, data)


def mos_request(locks: int) -> bytes:
    """Build the 0xE1 write: ``locks`` bit 0 switches the charge FET off, bit 1 the discharge."""
    return write_request(REG_MOS, bytes((MOS_USER, locks & (MOS_CHARGE_OFF | MOS_DISCHARGE_OFF))))


def ack(register: int, status: int = STATUS_OK) -> bytes:
    """The BMS's reply to a write of ``register``: ``DD reg status 00 chk 77``."""
    return pack_frame(register, status)


def software_locks(basic: Mapping[str, Any] | None) -> int:
    """Guess the 0xE1 bits in force from a decoded 0x03 part (0 when nothing is locked)."""
    if not basic or not basic["protection"] >> SOFTWARE_LOCK_BIT & 1:
        return 0
    return ~basic["fet_status"] & (MOS_CHARGE_OFF | MOS_DISCHARGE_OFF)


def decode_text(data: bytes) -> str:
    """Decode the 0x05 model string (a hook: its length varies, a table needs a fixed count)."""
    text = data.split(b"\0", 1)[0]
    return "".join(chr(c) for c in text if 32 <= c < 127).strip()


class JbdPlugin(Plugin):
    """LLT/JBD smart BMS: basic info (0x03), cell voltages (0x04), model string (0x05)."""

    name: ClassVar[str] = "jbd"
    title: ClassVar[str] = "LLT/JBD"
    baudrate: ClassVar[int] = 9600
    multidrop: ClassVar[bool] = False
    default_address: ClassVar[int] = 1  # nominal: JBD UART has no address
    reply_timeout: ClassVar[float] = 0.5
    framing: ClassVar[Framing] = Framing(
        header=bytes((START,)),
        length_offset=3,
        length_fmt="u8",
        length_adjust=OVERHEAD,
        max_length=0xFF + OVERHEAD,
        check="negsum16be",
        check_from=2,
        check_end=-3,
        check_at=-3,
        trailer=bytes((END,)),
    )
    layouts: ClassVar[Mapping[str, Layout]] = {
        "basic": Layout(BASIC_FIELDS, DATA_AT, -3),
        "cells": Layout(CELL_FIELDS, DATA_AT, -3),
    }
    controls: ClassVar[frozenset[str]] = frozenset({"charge", "discharge", "balance", "reset_soc"})

    def __init__(self) -> None:
        super().__init__()
        #: per address: the 0xE1 bits this plugin last wrote, and the 0x03 part read before it
        self._locks: dict[int, tuple[int, Mapping[str, Any] | None]] = {}

    def queries(self, address: int) -> Sequence[Query]:
        """Ask for basic info and cells every cycle, the model once (JBD ignores ``address``)."""
        return (
            Query("basic", read_request(REG_BASIC)),
            Query("cells", read_request(REG_CELLS)),
            Query("hardware", read_request(REG_HARDWARE), every=0, required=False),
        )

    def parse(self, frame: bytes) -> tuple[str, dict[str, Any]]:
        """Decode one reply into ``(part, fields)``.

        Raises:
            FrameError: wrong shape or check value, refused request (status != 0), unknown
                register, or a payload whose length does not fit the register.

        """
        frame = bytes(frame)
        n = len(frame)
        if n < OVERHEAD or frame[0] != START or frame[-1] != END or frame[3] + OVERHEAD != n:
            raise FrameError("jbd: frame length or delimiters do not match", frame)
        if negsum16(frame, 2, n - 3) != int.from_bytes(frame[-3:-1], "big"):
            raise FrameError("jbd: bad checksum", frame, kind="checksum")
        register, status = frame[1], frame[2]
        part = PARTS.get(register)
        if part is None:
            raise FrameError(f"jbd: reply for unknown register 0x{register:02X}", frame)
        if status != STATUS_OK:
            raise FrameError(f"jbd: BMS refused register 0x{register:02X} (0x{status:02X})", frame)
        end = n - 3
        if part == "basic":
            return part, self.decode_part(part, frame)
        if part == "cells":
            size = end - DATA_AT
            if size < 2 or size % 2:
                raise FrameError(f"jbd: {size} bytes of cell data is not whole cells", frame)
            return part, self.decode_part(part, frame)
        return part, {"hardware": decode_text(frame[DATA_AT:end])}

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the basic, cells and (optional) hardware parts to state fields.

        Raises:
            FrameError: the basic or cells part is missing.

        """
        require(parts, "basic", "cells")
        basic = parts["basic"]
        cells = list(parts["cells"]["cells"])
        balance = basic["balance_low"] | basic["balance_high"] << 16
        fets = basic["fet_status"]
        return {
            "voltage": basic["voltage"],
            "current": basic["current"],
            "soc": float(basic["soc"]),
            "capacity": basic["capacity"],
            "remaining": basic["remaining"],
            "cycles": basic["cycles"],
            "cells": cells,
            "balancing": bits(balance, len(cells)),
            "temperatures": list(basic["temperatures"]),
            "mosfet_temperature": None,
            "charge_fet": bool(fets & FET_CHARGE),
            "discharge_fet": bool(fets & FET_DISCHARGE),
            "alarms": alarms_from_bits(basic["protection"], PROTECTION_ALARMS),
            "hardware": parts.get("hardware", {}).get("hardware", ""),
        }

    # -- writes -----------------------------------------------------------------------------
    def control(
        self,
        link: ControlLink,
        address: int,
        action: str,
        value: Any,
        parts: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Carry out a control action (see the module docstring) and check the acks.

        Raises:
            ControlError: an unsupported action, or the BMS refused a write (status 0x80).
            LinkTimeout, FrameError, TransportError: from the link.

        """
        if action in ("charge", "discharge"):
            bit = MOS_CHARGE_OFF if action == "charge" else MOS_DISCHARGE_OFF
            basic = parts.get("basic")
            locks = self._locks_in_force(address, basic)
            locks = locks & ~bit if value else locks | bit
            self._write(link, REG_MOS, mos_request(locks))
            self._locks[address] = (locks, basic)
        elif action == "balance":
            self._set_balancer(link, bool(value))
        elif action == "reset_soc":
            self._write(link, REG_COMMAND, write_request(REG_COMMAND, FORCE_SOC_RESET))
        else:
            super().control(link, address, action, value, parts)

    def _locks_in_force(self, address: int, basic: Mapping[str, Any] | None) -> int:
        """The 0xE1 bits to keep: remembered while nothing newer says they are gone."""
        known = self._locks.get(address)
        if known is None:
            return software_locks(basic)
        locks, seen = known
        if basic is None or basic is seen or basic["protection"] >> SOFTWARE_LOCK_BIT & 1:
            return locks
        return 0

    def _set_balancer(self, link: ControlLink, enabled: bool) -> None:
        """Change bit 2 of 0x2D in factory mode; always try to leave factory mode."""
        self._write(link, REG_ENTER_FACTORY, write_request(REG_ENTER_FACTORY, FACTORY_KEY))
        exit_with = EXIT_DISCARD
        try:
            data = self._write(link, REG_FUNC_CONFIG, read_request(REG_FUNC_CONFIG))
            if len(data) != 2:
                raise FrameError(f"jbd: 0x2D holds {len(data)} bytes, expected 2", data)
            config = int.from_bytes(data, "big")
            wanted = config | FUNC_BALANCE_EN if enabled else config & ~FUNC_BALANCE_EN
            if wanted != config:
                payload = wanted.to_bytes(2, "big")
                self._write(link, REG_FUNC_CONFIG, write_request(REG_FUNC_CONFIG, payload))
                exit_with = EXIT_SAVE
        except BmsBankError:
            try:  # leave factory mode without storing anything, then report the first failure
                self._write(link, REG_EXIT_FACTORY, write_request(REG_EXIT_FACTORY, EXIT_DISCARD))
            except BmsBankError:
                pass
            raise
        self._write(link, REG_EXIT_FACTORY, write_request(REG_EXIT_FACTORY, exit_with))

    def _write(self, link: ControlLink, register: int, request: bytes) -> bytes:
        """Exchange ``request``; return the data of the BMS's reply for ``register``.

        Raises:
            ControlError: the BMS answered with an error status.

        """
        frame = link.exchange(request, self._reply_to(register))
        if frame[2] != STATUS_OK:
            raise ControlError(
                f"jbd: BMS refused register 0x{register:02X} (status 0x{frame[2]:02X})"
            )
        return frame[DATA_AT:-3]

    def _reply_to(self, register: int) -> Callable[[bytearray], bytes | None]:
        """An extractor that returns the first valid frame for ``register`` (others dropped)."""
        stats = LinkStats()

        def take(buf: bytearray) -> bytes | None:
            while (frame := self.extract(buf, None, stats)) is not None:
                if frame[1] == register:
                    return frame
            return None

        return take
