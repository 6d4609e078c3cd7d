"""JK BMS PB models on the RS485 bus master protocol: metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="jkpb",
    title="JKBMS PB Model",
    link="RS485",
    baudrate=115200,
    multidrop=True,
    addresses=range(1, 16),  # DIP switch 1-15; 0 makes a pack the bus master
    default_address=1,
    controls=frozenset({"charge", "discharge", "balance"}),
    options=(
        Option(
            "settings_every",
            int,
            60,
            "poll cycles between reads of the settings frame (the BMS's own current limits), "
            "1-3600",
            lambda n: 1 <= n <= 3600,
        ),
    ),
)
