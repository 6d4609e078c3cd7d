"""Renogy smart LiFePO4 batteries (RS485, Modbus RTU): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="renogy",
    title="Renogy smart battery",
    link="RS485",
    baudrate=9600,
    multidrop=True,
    # 0xF7 (247) from the factory; a Renogy hub or the DC Home app gives each battery on a shared
    # bus one of 0x30-0x3F (48-63). Any Modbus address in between is accepted.
    addresses=range(0x30, 0xF8),
    default_address=0xF7,
)
