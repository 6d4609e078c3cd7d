"""Heltec Modbus SmartBMS (YYBMS / YanYang) over RS485: metadata (see family.py)."""

from bmsbank.services.poller.plugins.info import FamilyInfo, Option

INFO = FamilyInfo(
    name="heltecmodbus",
    title="Heltec Modbus",
    link="RS485",
    baudrate=9600,
    multidrop=True,
    # a Modbus slave id set in the vendor's app (factory default 1); dbus-serialbattery polls
    # the list HELTEC_MODBUS_ADDR, several packs on one bus (its issue #245: five packs)
    addresses=range(1, 248),
    default_address=1,
    options=(
        Option(
            "voltage_scale",
            float,
            0.001,
            "V per count of the pack voltage register: 0.001 (dbus-serialbattery, RS485 packs) "
            "or 0.01 (the YY BMS decoder of the BMS Monitor app)",
            lambda x: x in (0.001, 0.01),
        ),
    ),
)
