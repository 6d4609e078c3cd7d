"""JK BMS JK-B*/JK-BD* (older "4E 57" UART protocol): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="jkbms",
    title="JKBMS",
    link="UART/RS485 (3.3 V TTL; RS485 through JK's adapter board)",
    baudrate=115200,
    multidrop=False,
    default_address=1,  # nominal: every BMS answers terminal number 0, one BMS per port
    options=(
        Option(
            "current_encoding",
            str,
            "auto",
            '"auto" (by the protocol version the BMS sends in 0xC0), "sign_bit" (bit 15 = '
            'charging, as dbus-serialbattery always reads it) or "offset" (10000 = 0 A)',
            lambda v: v in ("auto", "sign_bit", "offset"),
        ),
    ),
)
