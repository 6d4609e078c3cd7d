"""JBD UP series (UP16S015 ...) over RS485: metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

#: values of the ``extended_reads`` option
EXTENDED_READS = ("master", "all", "none")

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
    options=(
        Option(
            "extended_reads",
            str,
            "master",
            "which packs are asked for the high-resolution SoC, the serials and the product "
            "information besides their status: master (pack 1, the one the RS485 port is wired "
            "to), all (the UART port of the Bluetooth/WiFi module answers them for every pack) "
            "or none; a pack on the chain that does not answer them costs a reply timeout per "
            "cycle",
            lambda v: v in EXTENDED_READS,
        ),
    ),
)
