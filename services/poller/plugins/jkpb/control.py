"""Writes of the JK BMS PB plugin: the charge, discharge and balancer switches over RS485.

The switches BatChargeEN, BatDisChargeEN and BalanEN of the settings domain (UINT32, 1 = on) sit
at byte offsets 0x70, 0x74 and 0x78 from its base 0x1000 (the official "JKBMS RS485 Modbus
V1.0/V1.1" register map as mr-manuel/venus-os_dbus-serialbattery bms-docs/JKBMS-PB.md tabulates
it; the same switches are bytes 118, 122 and 126 of the settings frame the plugin reads). They are
written with a standard Modbus FC16 of two registers at 0x1000 + offset, value big endian:
``02 10 10 78 00 02 04 00 00 00 01 F6 69`` switches the balancer of pack 2 on, ``... 00 00 37 A9``
off (captures in syssi/esphome-jk-bms components/jk_rs485_bms/switch/__init__.py; their CRCs
check, which ties the register numbering to the wire). The pack acknowledges with the standard
FC16 response ``<addr> 10 <reg> 00 02 <crc>`` (JKBMS-PB.md, "Protocol 1: standard FC 0x10") or
refuses with the exception response ``<addr> 90 <code> <crc>``; the echo of the request a CH341
adapter produces, and any other traffic, is skipped while waiting for the acknowledgement. A
switch turned off opens its FET: bytes 198 (charge) and 199 (discharge) of the cell info go to 0.

Not offered: a reset of the SoC. The RS485 protocol documents no such register
(syssi/esphome-jk-bms issue #894: it "cannot be triggered on JK-BMS using external commands"; the
SoC calibration register 0x6E of issue #1051 is a BLE write of newer firmware only).
"""

from __future__ import annotations

from collections.abc import Callable

from bmsbank.errors import ControlError
from bmsbank.services.poller.plugins.base import modbus_frame

FC16 = 0x10
#: control action -> its settings switch register (Modbus address, UINT32, 1 = on)
SWITCH_REGISTERS: dict[str, int] = {"charge": 0x1070, "discharge": 0x1074, "balance": 0x1078}
EXCEPTION_LENGTH = 5  # addr 90 code crc_lo crc_hi
ILLEGAL_ADDRESS = 0x02  # Modbus exception code: illegal data address


def write_switch(address: int, register: int, on: bool) -> bytes:
    """Build the FC16 write of a settings switch (two registers, UINT32 big endian, 1 = on)."""
    head = bytes((address, FC16, register >> 8, register & 0xFF, 0x00, 0x02, 0x04))
    return modbus_frame(head + int(on).to_bytes(4, "big"))


def write_ack(address: int, register: int) -> bytes:
    """The standard FC16 response to a two-register write: ``<addr> 10 <reg> 00 02 <crc>``."""
    return modbus_frame(bytes((address, FC16, register >> 8, register & 0xFF, 0x00, 0x02)))


def exception_reply(address: int, code: int) -> bytes:
    """A Modbus exception response to FC16: ``<addr> 90 <code> <crc>``."""
    return modbus_frame(bytes((address, FC16 | 0x80, code)))


def ack_of(address: int, register: int) -> Callable[[bytearray], bytes | None]:
    """An extractor for the FC16 response of ``address`` to a write of ``register``.

    Raises (from the extractor):
        ControlError: a valid exception response from ``address``.
    """
    expected = write_ack(address, register)
    refusal = bytes((address, FC16 | 0x80))

    def take(buf: bytearray) -> bytes | None:
        at = buf.find(expected)
        if at >= 0:
            del buf[: at + len(expected)]
            return expected
        at = buf.find(refusal)
        while 0 <= at <= len(buf) - EXCEPTION_LENGTH:
            code = buf[at + 2]
            if buf[at : at + EXCEPTION_LENGTH] == exception_reply(address, code):
                raise ControlError(f"jkpb: pack {address} refused the write of 0x{register:04X} "
                                   f"(Modbus exception {code})")  # fmt: skip
            at = buf.find(refusal, at + 1)
        # Only the last bytes may begin an answer: drop the rest, so that noise is searched once
        # and not again after every read.
        del buf[: max(0, len(buf) - len(expected) + 1)]
        return None

    return take
