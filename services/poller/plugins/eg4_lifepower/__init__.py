"""EG4 LiFePOWER batteries (RS485, ``7E`` ... ``0D`` frames): metadata (see family.py)."""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="eg4_lifepower",
    title="EG4 LiFePOWER",
    link="RS485",
    baudrate=9600,
    multidrop=True,
    # the DIP switch setting is the address byte; dbus-serialbattery's table covers 0x00-0x0F
    addresses=range(0x00, 0x10),
    default_address=1,
)
