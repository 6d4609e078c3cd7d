"""JK BMS on its CAN port (the BMS broadcasts): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="jkbms_can",
    title="JKBMS CAN",
    link="CAN",
    baudrate=250000,
    multidrop=True,
    addresses=range(0, 16),  # the DIP switches: the BMS adds its address to every CAN id
    default_address=0,
    options=(
        Option(
            "protocol",
            str,
            "bb_pkg",
            'the layout of the alarm frame and of BATT_ST2: "bb_pkg" (JK\'s CAN BMS_BB_PKG '
            'V1.0 document, the firmware that sends per-cell frames) or "v1" (the older layout '
            "dbus-serialbattery and bms-to-inverter decode)",
            lambda s: s in ("bb_pkg", "v1"),
        ),
        Option(
            "cells",
            int,
            0,
            "cells in series, 0-32: 0 = as many as the per-cell frames carry",
            lambda n: 0 <= n <= 32,
        ),
        Option(
            "invert_current",
            bool,
            False,
            "true for a BMS that reports charge current as discharge, else false",
        ),
    ),
)
