"""EG4 LL batteries (RS485, Modbus RTU): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="eg4_ll",
    title="EG4 LL",
    link="RS485",
    baudrate=9600,
    multidrop=True,
    # DIP switch: modules 0x01-0x0F, the master module (ID 0) answers at 0x10 (EG4-LL MODBUS
    # Protocol V01.06, 1.3). Public drivers default to 1.
    addresses=range(0x01, 0x11),
    default_address=1,
    options=(
        Option(
            "current_scale",
            float,
            0.01,
            "A per count of the current register: 0.01 (EG4's protocol, RS485 packs) or 0.1 "
            "(the firmware aiobmsble reads, which also counts remaining capacity in 0.1 Ah and "
            "the charge current limit in 0.1 A)",
            lambda x: x in (0.01, 0.1),
        ),
    ),
)
