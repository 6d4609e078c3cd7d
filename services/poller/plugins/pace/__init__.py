"""Pace BMS (PBmsTools protocol version 2.5, Jakiper, Tewaycell, EG4 and other rebadged packs).

Metadata only (see family.py for the protocol).
"""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="pace",
    title="Pace",
    link="RS485/RS232",
    # nkinnan/esphome-pace-bms README: "the most common value for baud_rate is 9600, but some
    # BMSes are reported to use 19200": set [[ports]] baudrate for those.
    baudrate=9600,
    multidrop=True,
    # DIP switches next to the RS232/RS485 ports; ADR is one byte, the DIP switches give 0-15
    addresses=range(0, 16),
    # the address of every read captured in nkinnan/esphome-pace-bms and of its example config
    default_address=1,
    controls=frozenset({"charge", "discharge"}),
)
