"""Daly smart BMS over Bluetooth LE, Modbus-like "D2" protocol: metadata (see family.py)."""

from bmsbank.services.poller.plugins.info import Ble, FamilyInfo, Option

INFO = FamilyInfo(
    name="daly_ble",
    title="Daly BLE",
    link="BLE",
    baudrate=0,  # no serial line: GATT notifications
    multidrop=False,
    # the BMS's Modbus device address on BLE, the same on every board: one device, one pack
    addresses=range(0xD2, 0xD3),
    default_address=0xD2,
    controls=frozenset({"charge", "discharge", "balance"}),
    options=(
        Option(
            "invert_current",
            bool,
            False,
            "true for firmware that reports charge current as discharge (Daly's Modbus sheet "
            "reads register 0x29 the other way round than every public driver), else false",
        ),
        Option(
            "mos_temperature",
            bool,
            True,
            "false for boards that never answer the MOSFET-temperature read (registers "
            "0x3E-0x46): saves a reply timeout per cycle, else true",
        ),
    ),
    ble=Ble(
        service="0000fff0-0000-1000-8000-00805f9b34fb",
        notify="0000fff1-0000-1000-8000-00805f9b34fb",
        write="0000fff2-0000-1000-8000-00805f9b34fb",
        # "DL-" + MAC: syssi/esphome-daly-bms README.md; "JHB-": patman15/aiobmsble
        # aiobmsble/test_data/daly_bms.json (BMS_BLE-HA#145)
        names=("DL-", "JHB-"),
        with_response=False,
    ),
)
