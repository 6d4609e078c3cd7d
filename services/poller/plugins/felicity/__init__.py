"""Felicity Solar LiFePO4 batteries (LPBA/LPBF/FLA series): metadata (see family.py)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="felicity",
    title="Felicity Solar",
    link="RS485",
    baudrate=9600,
    multidrop=True,
    # Modbus slave ids: 1 and 2 share one bus in tgfuellner/Esphome-FelicityESS, 0x10 is the
    # alternative id DM6JM/FelicityConverter sniffed from Felicity's EDMS tool
    addresses=range(1, 17),
    default_address=1,
    options=(
        Option(
            "capacity",
            float,
            100.0,
            "the pack's rated capacity in Ah (the BMS does not report it), 1-2000",
            lambda ah: 1.0 <= ah <= 2000.0,
        ),
        Option(
            "invert_current",
            bool,
            False,
            "true for a pack whose current register is negative while discharging (the "
            "default follows the drivers that read it negative while charging), else false",
        ),
    ),
)
