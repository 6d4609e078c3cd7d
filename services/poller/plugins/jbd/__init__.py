"""LLT/JBD smart BMS (Jiabaida, Xiaoxiang, Overkill): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="jbd",
    title="LLT/JBD",
    link="UART/RS485",
    baudrate=9600,
    multidrop=False,
    default_address=1,  # nominal: JBD UART has no address
    controls=frozenset({"charge", "discharge", "balance", "reset_soc"}),
)
