"""JK BMS over Bluetooth LE (JK02 and JK04 records): metadata (see family.py for the protocol)."""

from bmsbank.services.poller.plugins.info import Ble, FamilyInfo, Option

PROTOCOLS = ("auto", "JK02_24S", "JK02_32S", "JK04")

INFO = FamilyInfo(
    name="jkbms_ble",
    title="JKBMS BLE",
    link="BLE",
    baudrate=0,  # no serial line
    multidrop=False,
    addresses=range(0, 1),
    default_address=0,  # a BLE device is one pack
    controls=frozenset({"charge", "discharge", "balance"}),
    options=(
        Option(
            "protocol",
            str,
            "auto",
            "auto (read off the records, else the device-info record), JK02_24S, JK02_32S or JK04",
            lambda s: s in PROTOCOLS,
        ),
        Option(
            "settings_every",
            int,
            60,
            "poll cycles between reads of the settings record (the BMS's own current limits), "
            "1-3600",
            lambda n: 1 <= n <= 3600,
        ),
    ),
    # GATT service 0xFFE0, one characteristic 0xFFE1 notifies and takes the requests (written
    # without response): syssi/esphome-jk-bms components/jk_bms_ble/jk_bms_ble.cpp
    # (JK_BMS_SERVICE_UUID, JK_BMS_CHARACTERISTIC_UUID, ESP_GATT_WRITE_TYPE_NO_RSP),
    # patman15/aiobmsble aiobmsble/bms/jikong_bms.py (uuid_services/uuid_rx/uuid_tx),
    # fl4p/batmon-ha bmslib/models/jikong.py (SERVICE_UUID, CHAR_UUID). Names: the default
    # device names "JK-B2A24S15P", "JK_B2A8S20P", "JK-BMS" (esphome-jk-bms README, aiobmsble and
    # batmon-ha test captures); aiobmsble matches by manufacturer id instead.
    ble=Ble(
        service="0000ffe0-0000-1000-8000-00805f9b34fb",
        notify="0000ffe1-0000-1000-8000-00805f9b34fb",
        write="0000ffe1-0000-1000-8000-00805f9b34fb",
        names=("JK-", "JK_"),
    ),
)
