"""A simulated RS485 bus of JK BMS PB packs: answers FC16 triggers byte-exactly per address.

Each reply is the 300-byte ``55 AA EB 90`` frame encoded from a :class:`BatteryModel` with the
family's own layouts, its sum8, then the FC16 ack, built with
:func:`~bmsbank.services.poller.plugins.jkpb.family.ack`. By default the ack follows the frame
directly (308 bytes, as in the JK BMS Monitor capture in tests/test_jkpb.py); ``padding=True``
adds the 0x00 before and after the ack that bms-docs/JKBMS-PB.md describes (310 bytes).
``echo=True`` puts each recognised trigger in front of its reply, like a half-duplex CH341
adapter. Triggers for an address without a pack get silence, garbage is skipped; only the
captured frames in tests/test_jkpb.py tie both the family and this simulator to the wire.

Writes of the settings switches (standard FC16, two registers; see
:mod:`~bmsbank.services.poller.plugins.jkpb.control`) are applied to the model - charge
(0x1070) and discharge (0x1074) open or close the FET, balance (0x1078) the balancer - and
acknowledged with the standard FC16 response; other registers get the Modbus exception 2
(illegal data address). The settings frame reports the three switches.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.frames import sum8
from bmsbank.native.spec import Field, ModbusRtu, encode
from bmsbank.services.poller.plugins.jkpb.control import (
    ILLEGAL_ADDRESS,
    SWITCH_REGISTERS,
    exception_reply,
    write_ack,
)
from bmsbank.services.poller.plugins.jkpb.family import (
    ABSENT_SENSOR,
    ALARM_BITS,
    BATTERY_SENSORS,
    CELL_FIELDS,
    CELL_INFO,
    CELL_SLOTS,
    DEVICE_FIELDS,
    FRAME_LENGTH,
    HEADER,
    MOSFET_SENSOR_BIT,
    PAD,
    PARTS,
    SETTINGS,
    SETTINGS_FIELDS,
    TYPE_AT,
    Family,
    ack,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import (
    CELL_OVER_VOLTAGE,
    CELL_UNDER_VOLTAGE,
    BatteryModel,
)

#: register -> part name
PART_OF_REGISTER = {register: part for part, (register, _) in PARTS.items()}
#: bytes a real frame carries that the family does not decode (average/delta cell mV, power mW,
#: the MOSFET reading repeated at 254)
EXTRA_CELL_FIELDS = (
    Field("average_cell", 74, "u16le", scale=0.001),
    Field("delta_cell", 76, "u16le", scale=0.001),
    Field("power", 154, "u32le", scale=0.001),
    Field("mosfet_repeat", 254, "s16le", scale=0.1),
)
MOSFET_REPEAT_BIT = 3
#: settings switches the family does not decode (BatChargeEN, BatDisChargeEN; 1 = on)
SWITCH_FIELDS = (Field("charge_switch", 118, "u32le"), Field("discharge_switch", 122, "u32le"))
CHARGE_LIMIT, DISCHARGE_LIMIT = 100.0, 150.0  # A, the simulated CurBatCOC / CurBatDcOC
DEVICE = {"model": "JK_PB2A16S20P", "hardware_version": "19A", "software_version": "19.27"}
TRIGGER_BYTES, SWITCH_BYTES = 2, 4  # FC16 byte counts: a trigger writes 1 register, a switch 2


class Simulator(base.Simulator):
    """One RS485 bus with JK PB packs at the addresses of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(16,), requests=True)

    def __init__(
        self, packs: dict[int, BatteryModel], echo: bool = False, padding: bool = False
    ) -> None:
        super().__init__(packs, echo)
        self.padding = padding
        self.counter = 0

    def answer(self, request: bytes) -> bytes:
        """Answer a trigger (FC16 of one register) or a switch write (two registers)."""
        address, register = request[0], request[2] << 8 | request[3]
        if request[6] == TRIGGER_BYTES:
            return self.reply(address, register)
        if request[6] == SWITCH_BYTES:
            return self.write(address, register, int.from_bytes(request[7:11], "big"))
        return b""

    def write(self, address: int, register: int, value: int) -> bytes:
        """Apply a switch write to the pack at ``address``; its ack (b"" when nobody answers)."""
        model = self.packs.get(address)
        if model is None:
            return b""
        if register == SWITCH_REGISTERS["charge"]:
            model.charge_fet = value != 0
        elif register == SWITCH_REGISTERS["discharge"]:
            model.discharge_fet = value != 0
        elif register == SWITCH_REGISTERS["balance"]:
            model.balancer = value != 0
        else:
            return exception_reply(address, ILLEGAL_ADDRESS)
        return write_ack(address, register)

    def reply(self, address: int, register: int) -> bytes:
        """Answer ``register`` as the pack at ``address`` would (b"" when nobody answers)."""
        model = self.packs.get(address)
        part = PART_OF_REGISTER.get(register)
        if model is None or part is None:
            return b""
        if part == CELL_INFO:
            payload = encode(CELL_FIELDS + EXTRA_CELL_FIELDS, self.cell_info(model))
        elif part == SETTINGS:
            payload = encode(SETTINGS_FIELDS + SWITCH_FIELDS, self.settings(model, address))
        else:
            payload = self.device_info(address)
        pad = bytes((PAD,)) if self.padding else b""
        return self.frame(PARTS[part][1], payload) + pad + ack(address, register) + pad

    def frame(self, ftype: int, payload: bytes) -> bytes:
        """Wrap ``payload`` (offsets from the frame start) into a 300-byte frame with its sum8."""
        out = bytearray(FRAME_LENGTH)
        out[: len(payload)] = payload
        out[: len(HEADER)] = HEADER
        out[TYPE_AT], out[TYPE_AT + 1] = ftype, self.counter
        self.counter = (self.counter + 1) & 0xFF
        out[-1] = sum8(out, 0, FRAME_LENGTH - 1)
        return bytes(out)

    @staticmethod
    def cell_info(m: BatteryModel) -> dict[str, Any]:
        """Values of the cell info frame (type 0x02) from the model."""
        cells = m.cell_voltages[:CELL_SLOTS]
        probes = dict(zip((name for name, _ in BATTERY_SENSORS), m.temperatures, strict=False))
        sensor_mask = 1 << MOSFET_SENSOR_BIT | 1 << MOSFET_REPEAT_BIT
        for name, bit in BATTERY_SENSORS:
            sensor_mask |= (1 << bit) if name in probes else 0
        alarms = base.alarm_bits(m, ALARM_BITS)
        current = m.effective_current
        return {
            "cell_voltages": cells + [0.0] * (CELL_SLOTS - len(cells)),
            "cell_mask": (1 << len(cells)) - 1,
            "average_cell": sum(cells) / len(cells),
            "delta_cell": max(cells) - min(cells),
            "max_cell_index": cells.index(max(cells)),
            "min_cell_index": cells.index(min(cells)),
            "mosfet_temperature": m.mosfet_temperature,
            "mosfet_repeat": m.mosfet_temperature,
            "voltage": m.voltage,
            "power": abs(m.voltage * current),
            "current": current,
            **{name: probes.get(name, ABSENT_SENSOR) for name, _ in BATTERY_SENSORS},
            "alarm_bits": alarms,
            "balance_current": 0.0,
            "balancing_action": 1 if any(m.balancing) else 0,
            "soc": round(m.bms_soc),
            "remaining": m.remaining,
            "capacity": m.capacity,
            "cycles": m.cycles,
            "soh": 100,
            "charge_fet": int(m.charge_fet),
            "discharge_fet": int(m.discharge_fet),
            "sensor_mask": sensor_mask,
        }

    @staticmethod
    def settings(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the settings frame (type 0x01) from the model."""
        return {
            "cell_undervoltage": CELL_UNDER_VOLTAGE,
            "cell_overvoltage": CELL_OVER_VOLTAGE,
            "charge_current_limit": CHARGE_LIMIT,
            "discharge_current_limit": DISCHARGE_LIMIT,
            "cell_count": m.cells,
            "balancer_enabled": int(m.balancer),
            "charge_switch": int(m.charge_fet),
            "discharge_switch": int(m.discharge_fet),
            "capacity": m.capacity,
            "device_address": address,
        }

    @staticmethod
    def device_info(address: int) -> bytes:
        """Build the device info payload (type 0x03): ASCII fields, NUL padded."""
        text = {**DEVICE, "name": f"BMSBANK-SIM-{address}", "serial": f"SIM{address:05d}"}
        out = bytearray(FRAME_LENGTH - 1)
        for f in DEVICE_FIELDS:
            out[f.offset : f.offset + f.count] = (
                text[f.name].encode("ascii")[: f.count].ljust(f.count, b"\x00")
            )
        return bytes(out)
