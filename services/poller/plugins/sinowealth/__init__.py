"""Sinowealth BMS (Daly 3S-10S boards with a Sinowealth chip; ``0A cmd 04`` requests): metadata.

See family.py for the protocol and its sources.
"""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="sinowealth",
    title="Sinowealth BMS (Daly 3S-10S boards with a Sinowealth SH39F003/SH367303-306 chip)",
    link="UART (3.3 V TTL)",
    baudrate=9600,
    multidrop=False,
    default_address=1,  # nominal: the protocol has no address, one BMS per port
)
