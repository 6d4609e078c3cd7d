"""Daly smart BMS on its CAN port: 250 kbit/s, 29-bit ids, polled; several boards per bus.

A request is an extended frame ``0x18 <command> <board> 0x40`` (0x40: the host) with 8 zero data
bytes; a board answers ``0x18 <command> 0x40 <board>``. The commands and their 8 data bytes are
those of the UART "A5" protocol, so this family decodes them with plugins/daly's tables, checks
and state mapping (one UART frame per CAN frame, its data bytes the CAN frame's): see
plugins/daly/family.py for the layouts, the current sign (option ``invert_current``) and the
alarm bits.

Sources (short names): DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/
daly_can.py (ids ``0x18900140`` / ``0x18904001``, the board number in byte 1 of a request and
byte 0 of a reply, 8 zero data bytes, the 0x90-0x98 and 0x50 data layouts as on the UART, cell
frames told apart by their first data byte) and its test/daly_can_simulator.py; AIR =
ai-republic/bms-to-inverter bms-daly-can/src/main/java/com/airepublic/bmstoinverter/bms/daly/
can/DalyBmsCANProcessor.java (request ``40 <board> <command> 18`` little endian = id
``0x18 <command> <board> 0x40``, a reply's byte 1 must be 0x40 and its byte 0 is the board, data
length 8, decoded by the same DalyMessageHandler as the RS485 binding).

- 250 kbit/s (PROTOCOLS.md; DSB's dbus-serialbattery.py tries 250 kbit/s first, then 500: the
  input's ``bitrate`` overrides it); AIR and DSB poll board 1 by default.
- One poll cycle sends 0x90 (SoC, voltage, current), 0x93 (FETs, remaining), 0x94 (status:
  counts, cycles), 0x95 (cells), 0x96 (temperatures), 0x97 (balancing), 0x98 (failures), and
  0x50 (rated capacity) on the first cycle and every 60th; replies arrive on their own and are
  kept per part (0x95 and 0x96 per frame number, data byte 0), so a lost reply leaves the part
  of the cycle before.
- 0x95 sends ceil(cells / 3) frames on most firmware and all 16 on some (see plugins/daly):
  on CAN every frame is separate, so frames 1..ceil(cells / 3) are used, whatever follows is
  kept but not needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.services.poller.can_family import CanFamily, CanFrame
from bmsbank.services.poller.plugins.base import require
from bmsbank.services.poller.plugins.daly import family as uart
from bmsbank.services.poller.plugins.daly_can import INFO

PRIORITY, HOST = 0x18, 0x40
#: the commands of one poll cycle, in order (0x50 only on some cycles: ``RATED_EVERY``)
POLLED = (uart.SOC, uart.FETS, uart.STATUS, uart.CELLS, uart.TEMPERATURES, uart.BALANCE,
          uart.FAILURE)  # fmt: skip
RATED_EVERY = 60  # cycles between two 0x50 requests (the rated capacity does not change)
#: multi-frame parts -> (items per frame, most frames: 48 cells, 21 sensors as on the UART)
COLLECTED = {"cells": (3, 16), "temperatures": (7, 3)}


def request_id(board: int, command: int) -> int:
    """The id of a request of ``command`` for ``board``: ``0x18 cmd board 0x40``."""
    return PRIORITY << 24 | command << 16 | board << 8 | HOST


def reply_id(board: int, command: int) -> int:
    """The id of ``board``'s reply to ``command``: ``0x18 cmd 0x40 board``."""
    return PRIORITY << 24 | command << 16 | HOST << 8 | board


def frame_part(part: str, number: int) -> str:
    """The part name frame ``number`` of a multi-frame reply is kept under."""
    return f"{part}#{number}"


class Family(CanFamily):
    """Daly boards 1-16 on one CAN bus, polled."""

    info = INFO
    reply_timeout: ClassVar[float] = 0.5  # DSB reads the replies 0.1 s after its requests

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        #: the UART family: its tables, checks and state mapping decode the data bytes
        self.uart = uart.Family({"invert_current": self.options["invert_current"]})

    def requests(self, address: int, cycle: int) -> Sequence[CanFrame]:
        """The requests of one cycle for board ``address`` (0x50 on cycle 0 and every 60th).

        Raises:
            ValueError: ``address`` is not a board number 1-16.

        """
        if address not in self.addresses:
            raise ValueError(f"daly_can: board {address} outside 1-16")
        commands = ((uart.RATED,) if cycle % RATED_EVERY == 0 else ()) + POLLED
        return [CanFrame(request_id(address, c), bytes(8), extended=True) for c in commands]

    def address_of(self, frame: CanFrame) -> int | None:
        """The board a reply comes from (byte 0 of the id); None for anything else."""
        if not frame.extended or frame.id >> 24 != PRIORITY or (frame.id >> 8) & 0xFF != HOST:
            return None
        return frame.id & 0xFF

    def accept(self, frame: CanFrame, parts: dict[str, dict[str, Any]]) -> None:
        """Decode a reply with the UART family's tables and checks into ``parts``.

        Raises:
            FrameError: a command with no part ("unexpected"), fewer than 8 data bytes
                ("truncated"), content the UART family rejects or a frame number out of
                range ("malformed").

        """
        command = (frame.id >> 16) & 0xFF
        part = uart.PARTS.get(command)
        if part is None or self.address_of(frame) is None:
            raise FrameError(f"daly_can: id 0x{frame.id:08X} is no reply this family decodes",
                             frame.data, kind="unexpected")  # fmt: skip
        if len(frame.data) != uart.DATA_LENGTH:
            kind = "truncated" if len(frame.data) < uart.DATA_LENGTH else "malformed"
            raise FrameError(f"daly_can: {part} reply with {len(frame.data)} data bytes, not 8",
                             frame.data, kind=kind)  # fmt: skip
        _, fields = self.uart.parse(uart.pack_frame(frame.id & 0xFF, command, frame.data))
        if part in COLLECTED:
            number = fields.pop("frame")
            if not 1 <= number <= COLLECTED[part][1]:
                raise FrameError(f"daly_can: {part} frame number {number}", frame.data)
            part = frame_part(part, number)
        parts[part] = fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The UART family's state from the parts, the cell and sensor frames joined first.

        Raises:
            FrameError(kind="truncated"): a required reply, or a frame of the cells or the
                sensors 0x94 counts, has not arrived.

        """
        require(parts, "status")
        merged = dict(parts)
        counts = {"cells": parts["status"]["cell_count"],
                  "temperatures": parts["status"]["sensor_count"]}  # fmt: skip
        for part, (per, _) in COLLECTED.items():
            frames = max(1, math.ceil(counts[part] / per))
            names = [frame_part(part, n) for n in range(1, frames + 1)]
            missing = [n for n in names if n not in parts]
            if missing:
                raise FrameError(f"daly_can: {', '.join(missing)} not received",
                                 kind="truncated")  # fmt: skip
            merged[part] = {part: [v for n in names for v in parts[n][part]]}
        return {**self.uart.state(merged), "hardware": "Daly CAN"}
