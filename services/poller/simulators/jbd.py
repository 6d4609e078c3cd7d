"""A simulated LLT/JBD BMS: answers read requests byte-exactly from a :class:`BatteryModel`.

Replies are encoded with the plugin's own field tables (the inverse of its decoding) and framed
with its :func:`~bmsbank.services.poller.plugins.jbd.pack_frame`, so only the captured frames in
tests/test_jbd.py tie both to the real wire format.
"""

from __future__ import annotations

from bmsbank.native.frames import negsum16
from bmsbank.native.spec import encode
from bmsbank.services.poller.plugins.jbd import (
    BASIC_FIELDS,
    CELL_FIELDS,
    END,
    FET_CHARGE,
    FET_DISCHARGE,
    PROTECTION_ALARMS,
    READ,
    REG_BASIC,
    REG_CELLS,
    REG_HARDWARE,
    START,
    STATUS_ERROR,
    STATUS_OK,
    JbdPlugin,
    pack_frame,
)
from bmsbank.services.poller.simulators.battery import BatteryModel

REQUEST_LENGTH = 7  # DD A5 reg 00 chk_hi chk_lo 77
#: alarm name -> the first protection bit that reports it (inverse of the plugin's mapping)
ALARM_BITS: dict[str, int] = {
    name: bit for bit, name in sorted(PROTECTION_ALARMS.items(), reverse=True)
}
SOFTWARE_VERSION = 0x21  # shown as 2.1 by the JBD app
PRODUCTION_DATE = (24 << 9) | (3 << 5) | 15  # 2024-03-15: year-2000 << 9 | month << 5 | day


def is_request_prefix(buf: bytes | bytearray) -> bool:
    """Tell whether ``buf`` (shorter than a request) may still grow into a read request."""
    expected = (START, READ, None, 0)
    return all(e is None or b == e for b, e in zip(buf, expected, strict=False))


def is_read_request(req: bytes | bytearray) -> bool:
    """Tell whether ``req`` is a complete, valid ``DD A5 reg 00 chk 77`` read request."""
    return (
        len(req) == REQUEST_LENGTH
        and is_request_prefix(req[:4])
        and req[-1] == END
        and negsum16(req, 2, 4) == int.from_bytes(req[4:6], "big")
    )


class JbdSimulator:
    """One JBD board (JBD UART has no address; the key of ``packs`` is nominal)."""

    baudrate = JbdPlugin.baudrate
    hardware = "JBD-SP16S020-L16S-200A-SIM"

    def __init__(self, packs: dict[int, BatteryModel]) -> None:
        if len(packs) != 1:
            raise ValueError(f"a JBD bus carries exactly one pack, got {len(packs)}")
        self.packs = packs
        self._buf = bytearray()

    @property
    def model(self) -> BatteryModel:
        """The pack behind this board."""
        return next(iter(self.packs.values()))

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the poller; answer every complete read request, keep a partial one."""
        self._buf += data
        replies: list[bytes] = []
        while self._buf:
            start = self._buf.find(START)
            if start < 0:
                self._buf.clear()
                break
            del self._buf[:start]
            if len(self._buf) < REQUEST_LENGTH:
                if is_request_prefix(self._buf):
                    break
                del self._buf[:1]
                continue
            if is_read_request(self._buf[:REQUEST_LENGTH]):
                replies.append(self.reply(self._buf[2]))
                del self._buf[:REQUEST_LENGTH]
            else:
                del self._buf[:1]
        return replies

    def reply(self, register: int) -> bytes:
        """Answer a read of ``register`` (status 0x80 for a register it does not serve)."""
        if register == REG_BASIC:
            return pack_frame(REG_BASIC, STATUS_OK, self.basic_payload())
        if register == REG_CELLS:
            mv = {"cells": self.model.cell_voltages}
            return pack_frame(REG_CELLS, STATUS_OK, encode(CELL_FIELDS, mv))
        if register == REG_HARDWARE:
            return pack_frame(REG_HARDWARE, STATUS_OK, self.hardware.encode("ascii"))
        return pack_frame(register, STATUS_ERROR)

    def basic_payload(self) -> bytes:
        """Encode the 0x03 payload from the model's current values."""
        m = self.model
        balance = sum(flag << i for i, flag in enumerate(m.balancing[:32]))
        protection = 0
        for name in m.active_alarms:
            if name in ALARM_BITS:
                protection |= 1 << ALARM_BITS[name]
        fets = (FET_CHARGE if m.charge_fet else 0) | (FET_DISCHARGE if m.discharge_fet else 0)
        values = {
            "voltage": m.voltage,
            "current": m.effective_current,
            "remaining": m.remaining,
            "capacity": m.capacity,
            "cycles": m.cycles,
            "production_date": PRODUCTION_DATE,
            "balance_low": balance & 0xFFFF,
            "balance_high": balance >> 16,
            "protection": protection,
            "software_version": SOFTWARE_VERSION,
            "soc": round(m.soc),
            "fet_status": fets,
            "cell_count": m.cells,
            "ntc_count": len(m.temperatures),
            "temperatures": list(m.temperatures),
        }
        return encode(BASIC_FIELDS, values)
