"""ECS LiPro over RS485: a GreenMeter and its LiPro cell modules, Modbus RTU function 03, 8E1.

One bank is one GreenMeter (the pack's address: its Modbus address, default 1), a battery meter
that counts voltage, current and SoC and switches charge and discharge off, plus one LiPro
module per cell, each a Modbus device of its own (by default at the addresses after the
GreenMeter's). A poll cycle reads the GreenMeter, then each module: requests to several Modbus
addresses for one pack. Requests are ``addr 03 start(2) count(2) crc16`` (CRC-16/MODBUS, low
byte first), replies ``addr 03 n data[n] crc16``; a reply does not say which registers it
carries, so each is decoded with the read it answers, and must come from the address asked.
Numbers are big-endian registers; 32-bit values are two registers, the low word first
(minimalmodbus BYTEORDER_LITTLE_SWAP). Sources (short names):

- DSB = Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/ecs.py (PR #204 "ESC GreenMeter")
  and mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/ecs.py (the same reads):
  ``Ecs.test_connection``, ``find_LiPro_cells``, ``read_status_data``, ``read_soc_data``,
  ``read_cell_data``; its config GREENMETER_ADDRESS 1, LIPRO_START_ADDRESS 2.
- ISSUE = Louisvdw/dbus-serialbattery issue #28 (ECS: "modbus RTU with 19200 baud and even
  parity"; the SoC comes from the GreenMeter, the LiPros do cell monitoring and balancing).

GreenMeter registers (DSB): 0 id (500, 501, 502: the 500 A, 250 A, 125 A meter), 2 production
number u32, 30 discharge current limit s16 A (DSB takes its magnitude), 31 charge current limit
s16 A, 46 capacity u32 mAh, 102/103 temperatures s16 0.01 °C, 108 voltage s32 mV, 114 current
s32 mA (+ = charge, as the meter counts it), 128 SoC u32 0.001 % (DSB: a meter "that seems to not
correctly define/set the high bytes" sends 50 % as C350 FFFF: a high word FFFF is dropped), 130
over-voltage state and 131 under-voltage state (0 OK; 1 voltage, 2 current, 3-4 high
temperature, 5-6 low temperature: charge resp. discharge is off while not 0). LiPro registers:
0 id (100-104: LiPro1-X v1, active, v2, active v2, v3), 100 cell voltage u16 mV, 101 cell
temperature s16 0.01 °C, 102 balancing (DSB: balancing while above 50).

Polling: the GreenMeter's id once (it identifies the family: a value of 500-502), voltage,
current, SoC, states and temperatures every cycle, limits, capacity and production number once;
then 100 x 3 of each LiPro module (DSB reads the three registers one by one). The number of
modules is the port option ``cells``; at 0 the cycle asks the 16 addresses after the first and
the modules that answer in a row, fresh in this cycle, are the cells (DSB's detection asks
register 0 of LIPRO_START..LIPRO_END once at start; bmsbank cannot change a cycle's requests, so
it keeps asking: set ``cells`` to spare the silent addresses their timeout).

Where bmsbank differs from DSB:

- DSB's ``read_cell_data`` returns after the first module (a ``return True`` inside its loop),
  so it shows one cell voltage; every module is read here.
- DSB raises the temperature and current states as warnings (level 1); here every state is an
  alarm (level 2): the GreenMeter has switched charge or discharge off for it.

Frames in tests/test_ecs.py are built from this description (no raw capture of a GreenMeter or
LiPro frame is public) and say so. No writes: DSB has none.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Field, Layout, ModbusRtu
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    answered_read,
    modbus_read,
    parse_modbus_read,
)
from bmsbank.services.poller.plugins.ecs import INFO

FC_HOLDING = 0x03
#: GreenMeter parts -> (first register, count): DSB's reads (the two states in one read)
BLOCKS: dict[str, tuple[int, int]] = {
    "id": (0, 1),
    "voltage": (108, 2),
    "current": (114, 2),
    "soc": (128, 2),
    "states": (130, 2),
    "temperatures": (102, 2),
    "limits": (30, 2),
    "capacity": (46, 2),
    "production": (2, 2),
}
PART_AT = {start: part for part, (start, _) in BLOCKS.items()}
LIPRO_READ = (100, 3)  # cell voltage, temperature, balancing
LIPRO = "lipro"  # the decoded part of a module's reply before it is numbered "cell<n>"
METER_IDS = {500: "500A", 501: "250A", 502: "125A"}
LIPRO_IDS = range(100, 105)
AUTO_MODULES = 16  # addresses asked when the option ``cells`` is 0
SOC_HIGH_WORD_BUG = 0xFFFF0000  # DSB: 50 % arrives as C350 FFFF
BALANCING_ABOVE = 50  # DSB: register 102 above this = balancing

GREENMETER: tuple[Field, ...] = (
    Field("meter_id", 0, "u16be"),
    Field("production", 2, "u32ws"),
    Field("discharge_current_limit", 30, "s16be", scale=1.0),  # DSB: its magnitude
    Field("charge_current_limit", 31, "s16be", scale=1.0),
    Field("capacity", 46, "u32ws", scale=0.001),  # mAh
    Field("temperatures", 102, "s16be", scale=0.01, count=2),
    Field("voltage", 108, "s32ws", scale=0.001),
    Field("current", 114, "s32ws", scale=0.001),
    Field("soc_raw", 128, "u32ws"),
    Field("over_voltage", 130, "s16be"),
    Field("under_voltage", 131, "s16be"),
)
MODULE: tuple[Field, ...] = (
    Field("module_id", 0, "u16be"),  # DSB's detection read (not polled; the simulator answers it)
    Field("cell_voltage", 100, "u16be", scale=0.001),
    Field("cell_temperature", 101, "s16be", scale=0.01),
    Field("cell_balance", 102, "u16be"),
)
#: state code of register 130 (charge side) resp. 131 (discharge side) -> alarm
CHARGE_STATES: dict[int, str] = {
    1: "high_voltage",
    2: "high_charge_current",
    3: "high_charge_temperature",
    4: "high_charge_temperature",
    5: "low_charge_temperature",
    6: "low_charge_temperature",
}
DISCHARGE_STATES: dict[int, str] = {
    1: "low_voltage",
    2: "high_discharge_current",
    3: "high_temperature",
    4: "high_temperature",
    5: "low_temperature",
    6: "low_temperature",
}
#: fields a state needs
NEEDED = ("meter_id", "voltage", "current", "soc", "over_voltage", "under_voltage",
          "temperatures")  # fmt: skip
#: decoded parts carry the order they were decoded in: a module's part older than this cycle's
#: voltage read is from an earlier cycle (a module that fell silent), not a cell of now
ORDER = "decoded"


def read_request(address: int, start: int, count: int) -> bytes:
    """The FC03 request for ``count`` holding registers from ``start``."""
    return modbus_read(address, FC_HOLDING, start, count)


def parse_request(request: bytes) -> tuple[int, int, int] | None:
    """(address, start, count) of an FC03 read request, or None."""
    read = parse_modbus_read(request, (FC_HOLDING,))
    return None if read is None else (read[0], read[2], read[3])


def cell_part(n: int) -> str:
    """The part name of the n-th LiPro module's reply (1 first)."""
    return f"cell{n}"


class Family(Plugin):
    """ECS: the GreenMeter's readings, then one read per LiPro module."""

    info = INFO
    #: DSB relies on minimalmodbus's default 50 ms reply timeout; twice that here
    reply_timeout: ClassVar[float] = 0.1
    #: Modbus RTU's 3.5 characters of silence at 19200 8E1 are 2 ms
    command_gap: ClassVar[float] = 0.005
    framing = ModbusRtu(functions=(FC_HOLDING,), addresses=(1, 247))
    layouts: ClassVar[Mapping[str, Layout]] = {
        **{part: Layout(GREENMETER, 3, -2, "registers") for part in (*BLOCKS, "registers")},
        LIPRO: Layout(MODULE, 3, -2, "registers"),
    }
    #: replies come from the GreenMeter and from each module: answered_read checks the address
    #: of each against the read it answers, :meth:`parse` the GreenMeter's against the pack's
    address_at = -1

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._order = itertools.count(1)

    def modules(self, address: int) -> range:
        """The Modbus addresses of the LiPro modules of the bank whose meter is at ``address``."""
        first = self.options["lipro_start"] or address + 1
        count = self.options["cells"] or AUTO_MODULES
        return range(first, min(first + count, 248))

    def queries(self, address: int) -> Sequence[Query]:
        """The GreenMeter's id first (it identifies the family), its readings, then each module."""
        fixed = bool(self.options["cells"])

        def meter(part: str, **kw: Any) -> Query:
            return Query(part, read_request(address, *BLOCKS[part]), **kw)

        return (
            meter("id", every=0),
            meter("voltage"),
            meter("current"),
            meter("soc"),
            meter("states"),
            meter("temperatures"),
            meter("limits", every=0, required=False),
            meter("capacity", every=0, required=False),
            meter("production", every=0, required=False),
            *(Query(cell_part(n), read_request(module, *LIPRO_READ), required=fixed)
              for n, module in enumerate(self.modules(address), 1)),
        )  # fmt: skip

    def parse(
        self, frame: bytes, request: bytes | None = None, address: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Decode a reply; a module's reply becomes the part ``cell<n>`` of its place in the bank.

        Raises:
            FrameError: as :meth:`Plugin.parse`; a GreenMeter reading from another address than
                the pack's, or a module reply from an address that is no module of the pack
                ("address").

        """
        part, fields = super().parse(frame, request, address)
        assert request is not None  # identify refuses a reply without its request
        asked, pack = request[0], address if address is not None else self.default_address
        if part != LIPRO:
            if address is not None and asked != address:
                raise FrameError(f"{self.name}: GreenMeter reading from address {asked}, the "
                                 f"pack's GreenMeter is at {address}", frame,
                                 kind="address")  # fmt: skip
            return part, fields
        modules = self.modules(pack)
        if asked not in modules:
            raise FrameError(f"{self.name}: a LiPro reply from address {asked}, the pack's "
                             f"modules are at {modules.start}-{modules.stop - 1}", frame,
                             kind="address")  # fmt: skip
        return cell_part(asked - modules.start + 1), fields

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """A module's reply (a read from register 100) or the GreenMeter part the read names.

        Raises:
            FrameError: no request or not an FC03 read ("unexpected"), a reply from another
                address than asked ("address"), a byte count that does not answer the read
                ("malformed").

        """
        _function, start, count = answered_read(self.name, payload, request, (FC_HOLDING,))
        if start == LIPRO_READ[0] and count <= LIPRO_READ[1]:
            return LIPRO, start
        return PART_AT.get(start, "registers"), start

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Check the meter's id, undo the SoC high-word bug, take the limit's magnitude; number it.

        Raises:
            FrameError: an id no GreenMeter has, an SoC above 100 % ("malformed").

        """
        if "meter_id" in fields and fields["meter_id"] not in METER_IDS:
            raise FrameError(f"{self.name}: GreenMeter id {fields['meter_id']}", payload)
        if "soc_raw" in fields:
            raw = fields.pop("soc_raw")
            raw = raw - SOC_HIGH_WORD_BUG if raw >= SOC_HIGH_WORD_BUG else raw
            fields["soc"] = round(raw / 1000.0, 3)
            if fields["soc"] > 100.0:
                raise FrameError(f"{self.name}: SoC {fields['soc']:g} %", payload)
        if "discharge_current_limit" in fields:
            fields["discharge_current_limit"] = abs(fields["discharge_current_limit"])
        if "current" in fields:
            fields["current"] = round(fields["current"], 3) + 0.0  # never -0.0
        fields[ORDER] = next(self._order)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Merge the GreenMeter's parts, take the modules' cells in order, map to state fields.

        Raises:
            FrameError: a value the state needs was in no part, or no module answered
                ("truncated").

        """
        f: dict[str, Any] = {}
        for part, fields in parts.items():
            if not part.startswith("cell"):
                f.update(fields)
        missing = [name for name in NEEDED if name not in f]
        if missing:
            raise FrameError(f"{self.name}: no {', '.join(missing)} read", kind="truncated")
        modules = self.fresh_modules(parts)
        if not modules:
            raise FrameError(f"{self.name}: no LiPro module answered", kind="truncated")
        over, under = f["over_voltage"], f["under_voltage"]
        alarms = dict.fromkeys((*CHARGE_STATES.values(), *DISCHARGE_STATES.values()), 0)
        for code, table in ((over, CHARGE_STATES), (under, DISCHARGE_STATES)):
            if code in table:
                alarms[table[code]] = 2
        capacity = f.get("capacity")
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "capacity": capacity,
            "remaining": None if capacity is None else round(capacity * f["soc"] / 100.0, 3),
            "cells": [m["cell_voltage"] for m in modules],
            "balancing": [int(m["cell_balance"] > BALANCING_ABOVE) for m in modules],
            "temperatures": list(f["temperatures"]),
            "charge_fet": over == 0,
            "discharge_fet": under == 0,
            "bms_ccl": f.get("charge_current_limit"),
            "bms_dcl": f.get("discharge_current_limit"),
            "alarms": alarms,
            "hardware": f"ECS GreenMeter {METER_IDS[f['meter_id']]}, {len(modules)} LiPro",
            "serial": str(f["production"]) if "production" in f else "",
        }

    def fresh_modules(self, parts: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The modules' parts from the first on, while each is there and read after the voltage.

        A module whose part predates this cycle's voltage read answered in an earlier cycle
        only: it and the modules after it are not taken (stale cells are never shown).
        """
        since = parts.get("voltage", {}).get(ORDER, 0)
        out: list[Mapping[str, Any]] = []
        for n in itertools.count(1):
            fields = parts.get(cell_part(n))
            if fields is None or fields.get(ORDER, 0) < since or "cell_voltage" not in fields:
                return out
            out.append(fields)
        return out  # pragma: no cover - itertools.count never ends
