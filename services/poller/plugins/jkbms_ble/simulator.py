"""A simulated JK BMS BLE device: answers the 20-byte requests with 300-byte records.

0x97 gets the device-info record followed by the ``AA 55 90 EB C8 01 01 ...`` confirmation the
BMS sends (aiobmsble tests/bms/test_jikong_bms.py "ack"); 0x96 gets a settings record and a
cell-info record (the BMS then streams cell info; fl4p/batmon-ha bmslib/models/jikong.py).
Records are jkpb's (:mod:`~bmsbank.services.poller.plugins.jkpb.simulator`) for JK02_32S, or
re-encoded with the JK02_24S table (``protocol="JK02_24S"``); the device-info versions
(11.48 / 10.08) make ``protocol = "auto"`` pick the same layout. Switch writes (0x1D charge,
0x1E discharge, 0x1F balancer) are applied to the model and show in the settings record's
switch bytes; nothing acknowledges them, as on the real BMS. JK04 is not simulated. The fake
BlueZ splits the replies into notifications; only the captured records in
tests/test_jkbms_ble.py tie family and simulator to the wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import encode
from bmsbank.services.poller.plugins.jkbms_ble.family import (
    CELL_FIELDS_24S,
    CELL_SLOTS_24S,
    CMD_CELL_INFO,
    CMD_DEVICE_INFO,
    JK02_24S,
    JK02_32S,
    MOSFET_BIT_24S,
    REQUEST_FRAMING,
    REQUEST_HEADER,
    SENSORS_24S,
    SWITCH_REGISTERS,
    Family,
)
from bmsbank.services.poller.plugins.jkpb import simulator as jkpb
from bmsbank.services.poller.plugins.jkpb.family import (
    ABSENT_SENSOR,
    CELL_FIELDS,
    DEVICE_FIELDS,
    FRAME_LENGTH,
    PARTS,
    SETTINGS,
    SETTINGS_FIELDS,
)
from bmsbank.services.poller.simulators.battery import BatteryModel

#: the BMS's confirmation after a device-info request (aiobmsble's capture, without "AT\r\n")
CONFIRMATION = REQUEST_HEADER + bytes((0xC8, 0x01, 0x01)) + bytes(12) + b"\x44"
DEVICE = {
    JK02_32S: {"model": "JK_B2A8S20P", "hardware_version": "11.XA", "software_version": "11.48"},
    JK02_24S: {"model": "JK-B2A24S15P", "hardware_version": "10.XG", "software_version": "10.08"},
}
TYPE_CELL, TYPE_SETTINGS, TYPE_DEVICE = PARTS["cell_info"][1], PARTS[SETTINGS][1], 0x03
WRITE_LENGTH = 4


class Simulator(jkpb.Simulator):
    """One JK BMS BLE device (the pack at address 0 of ``packs``)."""

    family = Family
    request_framing = REQUEST_FRAMING  # type: ignore[assignment]  # not jkpb's Modbus triggers

    def __init__(
        self, packs: dict[int, BatteryModel], echo: bool = False, protocol: str = JK02_32S
    ) -> None:
        super().__init__(packs, echo)
        if protocol not in DEVICE:
            raise ValueError(f"jkbms_ble simulator: {protocol} is not simulated")
        self.protocol = protocol

    def answer(self, request: bytes) -> bytes | list[bytes]:  # type: ignore[override]
        """Records for 0x97 / 0x96; a switch write changes the model and gets no answer."""
        model = self.packs.get(0)
        if model is None:
            return b""
        cmd = request[4]
        if cmd == CMD_DEVICE_INFO:
            return [self.frame(TYPE_DEVICE, self.device_record()), CONFIRMATION]
        if cmd == CMD_CELL_INFO:
            settings = encode(SETTINGS_FIELDS + jkpb.SWITCH_FIELDS, self.settings(model, 0))
            return [self.frame(TYPE_SETTINGS, settings), self.frame(TYPE_CELL, self.cells(model))]
        if request[5] == WRITE_LENGTH and cmd in SWITCH_REGISTERS.values():
            on = int.from_bytes(request[6:10], "little") != 0
            if cmd == SWITCH_REGISTERS["charge"]:
                model.charge_fet = on
            elif cmd == SWITCH_REGISTERS["discharge"]:
                model.discharge_fet = on
            else:
                model.balancer = on
        return b""

    def cells(self, m: BatteryModel) -> bytes:
        """The cell-info payload in the simulated layout."""
        values = self.cell_info(m)
        if self.protocol == JK02_32S:
            return encode(CELL_FIELDS + jkpb.EXTRA_CELL_FIELDS, values)
        return encode(CELL_FIELDS_24S, self._as_24s(values, m))

    @staticmethod
    def _as_24s(values: dict[str, Any], m: BatteryModel) -> dict[str, Any]:
        cells = m.cell_voltages[:CELL_SLOTS_24S]
        probes = dict(zip((name for name, _ in SENSORS_24S), m.temperatures, strict=False))
        mask = 1 << MOSFET_BIT_24S
        for name, bit in SENSORS_24S:
            mask |= (1 << bit) if name in probes else 0
        return {
            **values,
            "cell_voltages": cells + [0.0] * (CELL_SLOTS_24S - len(cells)),
            "cell_mask": (1 << len(cells)) - 1,
            **{name: probes.get(name, ABSENT_SENSOR) for name, _ in SENSORS_24S},
            "alarm_bits": values["alarm_bits"] & 0xFFFF,  # 24S reports the low 16 bits
            "sensor_mask": mask,
        }

    def device_record(self) -> bytes:
        """The device-info payload: ASCII fields, NUL padded."""
        text = {**DEVICE[self.protocol], "name": "BMSBANK-SIM-BLE", "serial": "SIMBLE01"}
        out = bytearray(FRAME_LENGTH - 1)
        for f in DEVICE_FIELDS:
            out[f.offset : f.offset + f.count] = (
                text[f.name].encode("ascii")[: f.count].ljust(f.count, b"\x00")
            )
        return bytes(out)
