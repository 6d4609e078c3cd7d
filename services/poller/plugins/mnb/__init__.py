"""MNB BMS (a MAX17853 cell monitor on a Raspberry Pi's SPI bus): metadata.

See family.py for the protocol and its sources.
"""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="mnb",
    title="MNB (MAX17853 cell monitor on SPI)",
    link="SPI (MAX17853)",
    baudrate=500000,  # the SPI clock [Hz]: the public driver's max_speed_hz
    multidrop=False,
    addresses=range(0, 1),
    default_address=0,  # nominal: one chip per SPI device (/dev/spidevB.D), no address
    options=(
        Option("cells", int, 8, "cells in series, 1-13 (the MNB board: 8)", lambda n: 1 <= n <= 13),
        Option(
            "capacity",
            float,
            129.6,
            "Ah the SoC is counted against (the public driver's 36 x 3.6 Ah)",
            lambda x: 0 < x <= 10000,
        ),
        Option(
            "current_offset",
            float,
            2.2,
            "A added to the current-sense reading (board calibration; the driver's 2.2)",
            lambda x: abs(x) <= 100,
        ),
        Option(
            "current_gain",
            float,
            0.025,
            "V per A of the current-sense amplifier on cell input 1 (the driver's 0.025)",
            lambda x: 0 < x <= 10,
        ),
        Option(
            "check_crc",
            bool,
            True,
            "false to accept a read whose CRC-3 does not match (the driver never checks it)",
        ),
    ),
)
