"""KS48100 (SNS01 / Ho20 boards, DR-1363 protocol with ``>`` requests): metadata (see family.py)."""

from bmsbank.services.poller.plugins.daren_485 import ADDRESSES, SWAP_FETS
from bmsbank.services.poller.plugins.info import FamilyInfo

INFO = FamilyInfo(
    name="ks48100",
    title="KS48100",
    link="RS485",
    # dbus-serialbattery tries it at 9600 only; the BraunPWR KS48100 header runs at 9600 too
    # (fl4p/batmon-ha changelog, braunpwr_uart)
    baudrate=9600,
    multidrop=True,
    addresses=ADDRESSES,
    default_address=1,
    options=(SWAP_FETS,),
)
