"""ANT BMS, legacy protocol (``DB DB`` request, 140-byte ``AA 55 AA FF`` reply): metadata.

See family.py for the protocol and its sources.
"""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="ant",
    title="ANT BMS (legacy protocol, before 2021)",
    link="UART (3.3 V TTL)",
    baudrate=19200,
    multidrop=False,
    default_address=1,  # nominal: the protocol has no address, one BMS per port
    options=(
        Option(
            "invert_current",
            bool,
            False,
            "true to read a positive wire current as charge (as ESPHome's ant_bms_old does); "
            "false (default): positive on the wire is discharge, as captures of discharging "
            "packs show",
        ),
    ),
)
