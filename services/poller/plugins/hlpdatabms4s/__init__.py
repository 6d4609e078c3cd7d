"""HLPdata BMS4S (4-cell BMS with a text terminal: ``pv``, ``m1``): metadata.

See family.py for the protocol and its sources.
"""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="hlpdatabms4s",
    title="HLPdata BMS4S",
    link="UART (TTL)",
    baudrate=9600,
    multidrop=False,
    default_address=1,  # nominal: the protocol has no address, one BMS per port
    options=(
        Option(
            "capacity",
            float,
            100.0,
            "Ah of the pack (the BMS's BatterySize setting; its status line has no capacity), "
            "0.1-10000",
            lambda x: 0.1 <= x <= 10000,
        ),
        Option(
            "fet_flags_off",
            bool,
            False,
            "true to read status fields 7 and 8 as 'charge off' / 'load off' flags (1 = off), "
            "as their names in dbus-serialbattery's comment say; false (default): 1 = on, as "
            "that driver decodes them",
        ),
    ),
)
