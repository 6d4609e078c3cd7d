"""A battery that itself speaks the Victron CAN-bus BMS protocol (Pylontech, BYD, Pytes, ...).

Metadata only; see family.py for the protocol and its sources.
"""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="victron_can",
    title="Victron CAN-bus BMS protocol (Pylontech, BYD, ...)",
    link="CAN",
    baudrate=500000,
    multidrop=False,
    # The protocol has no address: one battery (one master of a stack) per CAN bus. The pack's
    # address is nominal, always 0.
    addresses=range(0, 1),
    default_address=0,
    options=(
        Option(
            "cells",
            int,
            16,
            "series cells of the battery, 2-64 (the protocol does not say)",
            lambda n: 2 <= n <= 64,
        ),  # fmt: skip
        Option(
            "even_cells",
            bool,
            False,
            "true: a battery that sends no 0x373 (Pylontech) is reported with its voltage spread "
            "evenly over its cells (no cell protection by the bank then, only the battery's own "
            "limits); false: such a battery is not used",
        ),
        Option(
            "capacity",
            float,
            0.0,
            "Ah, 0 = as the battery reports it (0x379 installed capacity, else 0x35F)",
            lambda x: 0.0 <= x <= 100000.0,
        ),
    ),
)
