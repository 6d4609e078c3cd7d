"""ECS GreenMeter with LiPro cell modules over RS485 (Modbus RTU, 8E1): metadata (see family.py)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

#: most LiPro modules a bank has here (one per cell; ECS: "more than 200 cells", a Victron bank
#: of LiFePO4 at 48 V has 16)
MAX_MODULES = 64

INFO = FamilyInfo(
    name="ecs",
    title="ECS LiPro",
    link="RS485",
    baudrate=19200,
    parity="E",  # ECS: "19200 baud and even parity" (dbus-serialbattery issue #28)
    # one bank per bus: the GreenMeter's Modbus address (dbus-serialbattery's GREENMETER_ADDRESS,
    # default 1); its LiPro modules answer at their own addresses (see the options)
    multidrop=False,
    addresses=range(1, 248),
    default_address=1,
    options=(
        Option(
            "cells",
            int,
            0,
            f"LiPro cell modules of the bank, 1-{MAX_MODULES}, read every cycle (a silent one "
            "stops the cycle); 0 counts them: the 16 addresses after the first are asked every "
            "cycle and the modules that answer in a row are the cells (each silent address costs "
            "a reply timeout)",
            lambda n: 0 <= n <= MAX_MODULES,
        ),
        Option(
            "lipro_start",
            int,
            0,
            "Modbus address of the first LiPro module, 1-247 (the next ones follow it); 0: the "
            "address after the GreenMeter's (dbus-serialbattery's default LIPRO_START_ADDRESS 2 "
            "with the GreenMeter at 1)",
            lambda a: 0 <= a <= 247,
        ),
    ),
)
