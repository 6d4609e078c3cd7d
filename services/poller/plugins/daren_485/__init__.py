"""Daren 485 (DR-JC03 and other DR-1363 protocol BMS): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

#: DIP-switch addresses: 0-15 on the 4-switch boards of the BASEN protocol document, 1-31 for
#: packs on a shared bus on the 6-switch boards (the 2022 user manual; 32 and 48 make a pack the
#: bus master, which polls the others itself and so cannot share the bus with us)
ADDRESSES = range(0, 32)

#: the option Daren and KS48100 share: which bit of the FET status word is which FET
SWAP_FETS = Option(
    "swap_fets",
    bool,
    False,
    "true to read FET status bit 0 as the charge FET and bit 1 as the discharge FET, as "
    "dbus-serialbattery does; the default follows the BASEN protocol document (bit 0 discharge, "
    "bit 1 charge)",
)

INFO = FamilyInfo(
    name="daren_485",
    title="Daren 485",
    link="RS485",
    # The BASEN document allows 9600 or 19200; m0n5t3r/esphome-daren-bms, the Tian Power notes
    # and dbus-serialbattery's first try (issue #262) run at 9600; the 48 V pack manual in
    # cpttinkering/daren-485 Docs/ and cpttinkering's DR-JC03 packs run at 19200: set
    # [[ports]] baudrate = 19200 for those.
    baudrate=9600,
    multidrop=True,
    addresses=ADDRESSES,
    default_address=1,
    options=(SWAP_FETS,),
)
