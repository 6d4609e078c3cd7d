"""Writes of the LLT/JBD family: FET switches, the balancer and a SoC reset.

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

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bmsbank.errors import BmsBankError, ControlError, FrameError
from bmsbank.native.frames import negsum16
from bmsbank.services.poller.plugins.base import Link, LinkStats

if TYPE_CHECKING:
    from bmsbank.services.poller.plugins.jbd.family import Family

START, END = 0xDD, 0x77
READ, WRITE = 0xA5, 0x5A
STATUS_OK, STATUS_ERROR = 0x00, 0x80
DATA_AT = 4
SOFTWARE_LOCK_BIT = 12  # protection bit: a FET is switched off by a 0xE1 write
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


class JbdControl:
    """Carries out the JBD writes for one family instance (remembers the FET locks it set)."""

    def __init__(self, family: Family) -> None:
        self.family = family
        #: per address: the 0xE1 bits last written, and the 0x03 part read before it
        self._locks: dict[int, tuple[int, Mapping[str, Any] | None]] = {}

    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Carry out ``action`` (charge, discharge, balance, reset_soc).

        Raises:
            ControlError: the BMS refused a write (status 0x80).
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

    def _locks_in_force(self, address: int, basic: Mapping[str, Any] | None) -> int:
        """The 0xE1 bits to keep: remembered while nothing newer says they are gone."""
        known = self._locks.get(address)
        if known is None:
            return software_locks(basic)
        locks, seen = known
        if basic is None or basic is seen or basic["protection"] >> SOFTWARE_LOCK_BIT & 1:
            return locks
        return 0

    def _set_balancer(self, link: Link, enabled: bool) -> None:
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

    def _write(self, link: Link, register: int, request: bytes) -> bytes:
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
            while (frame := self.family.extract(buf, stats)) is not None:
                if frame[1] == register:
                    return frame
            return None

        return take
