"""Daly smart BMS on its CAN port (polled, 29-bit ids): metadata (see family.py)."""

from bmsbank.services.poller.plugins.daly import INFO as UART
from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="daly_can",
    title="Daly CAN",
    link="CAN",
    baudrate=250000,
    multidrop=True,
    addresses=range(1, 17),  # the board number, as on the UART (id byte 1 of a request)
    default_address=1,
    # the UART family's option, same meaning: the data bytes are the UART frames'
    options=tuple(o for o in UART.options if o.name == "invert_current"),
)
