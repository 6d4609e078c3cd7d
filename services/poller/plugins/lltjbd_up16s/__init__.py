"""JBD UP series (UP16S015 ...) over RS485: metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="lltjbd_up16s",
    title="JBD UP16S",
    link="RS485",
    # dbus-serialbattery lltjbd_up16s.py opens the port at 9600 and treats any other speed as
    # interference from another process (check_for_interference)
    baudrate=9600,
    multidrop=True,
    # packs in parallel, numbered by DIP switch; the master is always 1 (lltjbd_up16s.py
    # is_master); no public source gives the highest address: 4 switches are assumed
    addresses=range(1, 16),
    default_address=1,
)
