"""Seplos BMS V2 (10C/10E/16E boards): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="seplos",
    title="Seplos V2",
    link="RS485",
    # RS485-1/RS485-2 ("host") ports run at 19200; the protocol PDF's default and the RS485 pins
    # of the CAN socket (inter-pack bus) run at 9600: set [[ports]] baudrate for those.
    baudrate=19200,
    multidrop=True,
    addresses=range(0, 16),
    # DIP switches all off = address 0: a single pack, or the master of a parallel bank
    default_address=0,
)
