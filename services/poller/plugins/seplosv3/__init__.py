"""Seplos v3 BMS (10E/16E "BMS V3", XZH-ElecTech): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="seplosv3",
    title="Seplos v3",
    link="RS485",
    baudrate=19200,
    multidrop=True,
    addresses=range(0, 16),  # DIP switch; 0 = the master of a parallel group (or a single pack)
    default_address=0,  # a single pack answers at 0 (the protocol's examples, serialbattery)
    options=(
        Option(
            "settings_every",
            int,
            60,
            "poll cycles between reads of the SPA settings (charge voltage limit, cell and NTC "
            "count), 1-3600",
            lambda n: 1 <= n <= 3600,
        ),
    ),
)
