"""A simulated CAN bus of Daly boards: answers ``0x18 cmd board 0x40`` requests from BatteryModels.

The answers are plugins/daly's simulator's: a request becomes the UART request of the same
command for the same board, the UART simulator answers it from the model, and each UART reply
frame's 8 data bytes become one CAN reply ``0x18 cmd 0x40 board`` (0x95 / 0x96: one frame per
3 cells / 7 sensors, as that simulator sends). A request for a board nobody is, an unknown
command, a standard id or a DLC other than 8 gets no answer. Writes (0xD9 / 0xDA / 0x21) are
applied to the model as that simulator applies them.
"""

from __future__ import annotations

from bmsbank.services.poller.can_family import CanFrame, CanSimulator
from bmsbank.services.poller.plugins.daly import family as uart
from bmsbank.services.poller.plugins.daly import simulator as uart_simulator
from bmsbank.services.poller.plugins.daly_can.family import HOST, PRIORITY, Family, reply_id
from bmsbank.services.poller.simulators.battery import BatteryModel


class Simulator(CanSimulator):
    """Daly boards at the board numbers of ``packs``."""

    family = Family

    def __init__(self, packs: dict[int, BatteryModel]) -> None:
        super().__init__(packs)
        #: the UART simulator that answers for the same models
        self.uart = uart_simulator.Simulator(packs)

    def answer(self, frame: CanFrame) -> list[CanFrame]:
        """The replies to one request (none when it is not for a board on this bus)."""
        if not frame.extended or frame.id >> 24 != PRIORITY or frame.id & 0xFF != HOST:
            return []
        board, command = (frame.id >> 8) & 0xFF, (frame.id >> 16) & 0xFF
        if board not in self.packs or len(frame.data) != uart.DATA_LENGTH:
            return []
        replies = self.uart.answer(uart.request(board, command, frame.data))
        frames = [replies] if isinstance(replies, bytes) else replies
        return [CanFrame(reply_id(board, command), f[uart.DATA_AT : uart.DATA_AT + 8], True)
                for f in frames if f]  # fmt: skip
