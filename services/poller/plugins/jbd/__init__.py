"""LLT/JBD smart BMS (Jiabaida, Xiaoxiang, Overkill): metadata (see family.py for the protocol).

Over BLE the same ``DD ... 77`` frames travel on GATT service 0xFF00: requests are written
(without response) to characteristic 0xFF02, replies arrive as notifications of 0xFF01, split
into MTU-sized pieces. Sources: syssi/esphome-jbd-bms components/jbd_bms_ble/jbd_bms_ble.cpp
(``JBD_BMS_SERVICE_UUID`` 0xFF00, ``JBD_BMS_NOTIFY_CHARACTERISTIC_UUID`` 0xFF01,
``JBD_BMS_CONTROL_CHARACTERISTIC_UUID`` 0xFF02), patman15/aiobmsble aiobmsble/bms/jbd_bms.py
(``uuid_services`` ff00, ``uuid_rx`` ff01, ``uuid_tx`` ff02), mr-manuel/venus-os_dbus-serialbattery
dbus-serialbattery/bms/lltjbd_ble.py (``BLE_CHARACTERISTICS_TX_UUID`` ff02 /
``BLE_CHARACTERISTICS_RX_UUID`` ff01, written with ``response=False``).

Advertised names: "xiaoxiang" (syssi/esphome-jbd-bms esp32-ble-scanner.yaml, the prefix it looks
for), "JBD-" (aiobmsble jbd_bms.py ``matcher_dict_list``), and the board's model code
``SP<cells>S...`` that newer modules advertise ("SP14S004L13S20A" in the BlueZ log of
mr-manuel/venus-os_dbus-serialbattery issue #120). aiobmsble also matches some rebranded packs by
MAC OUI with service ff00 alone (a name is not always a sign); ``bmsbank scan --ble`` then
matches by the service when no other family uses it.
"""

from bmsbank.services.poller.plugins.info import Ble, FamilyInfo

INFO = FamilyInfo(
    name="jbd",
    title="LLT/JBD",
    link="UART/RS485",
    baudrate=9600,
    multidrop=False,
    default_address=1,  # nominal: JBD UART has no address
    controls=frozenset({"charge", "discharge", "balance", "reset_soc"}),
    ble=Ble(
        service="0000ff00-0000-1000-8000-00805f9b34fb",
        notify="0000ff01-0000-1000-8000-00805f9b34fb",
        write="0000ff02-0000-1000-8000-00805f9b34fb",
        names=("xiaoxiang", "JBD-", "SP0", "SP1", "SP2", "SP3", "SP4", "SP5"),
    ),
)
