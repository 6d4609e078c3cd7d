"""A simulated LLT/JBD BMS: answers requests byte-exactly from a :class:`BatteryModel`.

Replies are encoded with the family's own layouts (the inverse of its decoding) and framed with
:func:`~bmsbank.services.poller.plugins.jbd.control.pack_frame`, so only the captured frames in
tests/test_jbd.py tie both to the real wire format.

Writes are acknowledged ``DD <reg> 00 00 00 00 77`` as the Jiabaida protocol describes and applied
to the model (sources in the plugin's docstring):

- 0xE1 MOS control: bit 0 / bit 1 of the second data byte switch the charge / discharge FET off;
  while any bit is set, protection bit 12 (software lock) is reported.
- 0x0A ``01 00`` force SoC reset: the model's SoC drift is cleared
  (:meth:`BatteryModel.resync_soc`).
- factory mode: 0x00 ``56 78`` enters it; 0x2D (func_config) is readable and writable only then
  (status 0x80 otherwise, as this simulator models EEPROM access); 0x01 ``28 28`` leaves it and
  stores a written func_config (bit 2 = the balancer), ``00 00`` leaves it discarding the write.

Anything else is refused with status 0x80.
"""

from __future__ import annotations

import dataclasses

from bmsbank.services.poller.plugins.jbd.control import (
    DATA_AT,
    EXIT_DISCARD,
    EXIT_SAVE,
    FACTORY_KEY,
    FORCE_SOC_RESET,
    FUNC_BALANCE_EN,
    MOS_CHARGE_OFF,
    MOS_DISCHARGE_OFF,
    READ,
    REG_COMMAND,
    REG_ENTER_FACTORY,
    REG_EXIT_FACTORY,
    REG_FUNC_CONFIG,
    REG_MOS,
    SOFTWARE_LOCK_BIT,
    STATUS_ERROR,
    STATUS_OK,
    WRITE,
    pack_frame,
)
from bmsbank.services.poller.plugins.jbd.family import (
    FET_CHARGE,
    FET_DISCHARGE,
    FRAMING,
    OVERHEAD,
    PROTECTION_ALARMS,
    REG_BASIC,
    REG_CELLS,
    REG_HARDWARE,
    Family,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

SOFTWARE_VERSION = 0x21  # shown as 2.1 by the JBD app
PRODUCTION_DATE = (24 << 9) | (3 << 5) | 15  # 2024-03-15: year-2000 << 9 | month << 5 | day
FUNC_SWITCH, FUNC_LED_EN = 0x0001, 0x0010  # func_config bits besides the balancer (simulated)
#: requests carry a few data bytes at most: a stray DD makes a long "length" and is skipped
REQUEST_FRAMING = dataclasses.replace(FRAMING, max_length=OVERHEAD + 16)


class Simulator(base.Simulator):
    """One JBD board (JBD UART has no address; the key of ``packs`` is nominal)."""

    family = Family
    request_framing = REQUEST_FRAMING
    hardware = "JBD-SP16S020-L16S-200A-SIM"

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        if len(packs) != 1:
            raise ValueError(f"a JBD bus carries exactly one pack, got {len(packs)}")
        super().__init__(packs, echo)
        self.factory = False  #: in factory mode (EEPROM registers accessible)
        self.mos_lock = 0  #: the 0xE1 bits in force
        self.func_config = FUNC_SWITCH | FUNC_LED_EN | FUNC_BALANCE_EN * self.model.balancer
        self._staged: int | None = None  #: func_config written in factory mode, not yet stored
        self.writes: list[tuple[int, bytes]] = []  #: (register, data) of every accepted write

    @property
    def model(self) -> BatteryModel:
        """The pack behind this board."""
        return next(iter(self.packs.values()))

    def answer(self, request: bytes) -> bytes:
        """Answer a read (``DD A5``) or write (``DD 5A``); other frames are not requests."""
        if request[1] == READ:
            return self.reply(request[2])
        if request[1] == WRITE:
            return self.write(request[2], request[DATA_AT:-3])
        return b""

    def reply(self, register: int) -> bytes:
        """Answer a read of ``register`` (status 0x80 for a register it does not serve)."""
        if register == REG_BASIC:
            return pack_frame(REG_BASIC, STATUS_OK, self.basic_payload())
        if register == REG_CELLS:
            cells = self.encode("cells", {"cells": self.model.cell_voltages})
            return pack_frame(REG_CELLS, STATUS_OK, cells)
        if register == REG_HARDWARE:
            return pack_frame(REG_HARDWARE, STATUS_OK, self.hardware.encode("ascii"))
        if register == REG_FUNC_CONFIG and self.factory:
            config = self.func_config if self._staged is None else self._staged
            return pack_frame(REG_FUNC_CONFIG, STATUS_OK, config.to_bytes(2, "big"))
        return pack_frame(register, STATUS_ERROR)

    def write(self, register: int, data: bytes) -> bytes:
        """Apply a write to the model; return the ack (status 0x80 when refused)."""
        accepted = self._apply(register, data)
        if accepted:
            self.writes.append((register, data))
        return pack_frame(register, STATUS_OK if accepted else STATUS_ERROR)

    def _apply(self, register: int, data: bytes) -> bool:
        m = self.model
        if register == REG_MOS and len(data) == 2:
            self.mos_lock = data[1] & (MOS_CHARGE_OFF | MOS_DISCHARGE_OFF)
            m.charge_fet = not self.mos_lock & MOS_CHARGE_OFF
            m.discharge_fet = not self.mos_lock & MOS_DISCHARGE_OFF
            return True
        if register == REG_COMMAND and data == FORCE_SOC_RESET:
            m.resync_soc()
            return True
        if register == REG_ENTER_FACTORY and data == FACTORY_KEY:
            self.factory = True
            return True
        if register == REG_EXIT_FACTORY and data in (EXIT_SAVE, EXIT_DISCARD) and self.factory:
            if data == EXIT_SAVE and self._staged is not None:
                self.func_config = self._staged
                m.balancer = bool(self.func_config & FUNC_BALANCE_EN)
            self.factory, self._staged = False, None
            return True
        if register == REG_FUNC_CONFIG and self.factory and len(data) == 2:
            self._staged = int.from_bytes(data, "big")
            return True
        return False

    def basic_payload(self) -> bytes:
        """Encode the 0x03 payload from the model's current values."""
        m = self.model
        balance = sum(flag << i for i, flag in enumerate(m.balancing[:32]))
        protection = base.alarm_bits(m, PROTECTION_ALARMS)
        protection |= (1 << SOFTWARE_LOCK_BIT) if self.mos_lock else 0
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
            "soc": round(m.bms_soc),
            "fet_status": fets,
            "cell_count": m.cells,
            "ntc_count": len(m.temperatures),
            "temperatures": list(m.temperatures),
        }
        return self.encode("basic", values)
