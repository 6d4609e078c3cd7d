"""Daly smart BMS, UART/RS485 "A5" protocol: metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="daly",
    title="Daly Smart BMS",
    link="UART/RS485",
    baudrate=9600,
    multidrop=True,
    addresses=range(1, 17),  # the "Board No" set in Daly's PC tool; requests carry 0x3F + board
    default_address=1,
    controls=frozenset({"charge", "discharge"}),
    options=(
        Option(
            "invert_current",
            bool,
            False,
            "true for firmware that reports charge current as discharge (the sign of 0x90 "
            "current is not the same on every Daly), else false",
        ),
        Option(
            "cell_frames",
            int,
            0,
            "0x95 frames per cell-voltage reply: 0 = ceil(cells / 3) from 0x94, or 1-16 for "
            "firmware that always sends that many (16: all)",
            lambda n: 0 <= n <= 16,
        ),
    ),
)
