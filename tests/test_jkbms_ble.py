"""JK BMS BLE family: captured notification streams and what is specific to BLE records (the
generic checks are in tests/plugin_contract.py): layout detection from the device-info record,
24S/32S/JK04 layouts, records split at every byte boundary, junk between records, records of
other kinds passed over while one kind is awaited, switch writes read back from the settings.

Captures (hex of the public bytes):
- AIO_*: patman15/aiobmsble tests/bms/test_jikong_bms.py ``_PROTO_DEFS`` (device info "dev",
  confirmation "ack" with the BLE module's AT\\r\\n, cell info "cell") with the values its
  ``_RESULT_DEFS`` expects: JK02_24S (JK-B2A20S20P sw 10.08), JK02_32S (JK_B2A8S20P sw 11.48),
  JK02_32S_v15 (JK_PB2A16S20P sw 15.38), JK02_32S_v19.27 (JK-PB2A16S20P sw 19.27).
- BATMON_*: fl4p/batmon-ha bmslib/test/data/jk_issue377.py (JK_B2A8S30P sw 19.04, issue #377):
  settings, cell info, device info, the junk after the device info, a corrupt cell-info record.
- JK04_*: syssi/esphome-jk-bms esp32-ble-jk04-example-faker.yaml (JK-B2A16S hw 3.0 sw 3.3.0).
- B5A24S_CELLS: syssi/esphome-jk-bms docs/b5a24s/JK-B5A24S-8.0.3M-BLE-JK02.txt (its cell info;
  float32 cells, i.e. JK04 records, although the device info says hw 8.X sw 8.0.3M).
- SNOOP_*: the ATT notification values (one string per notification, in order, as the phone
  received them) and the JK app's requests in the Bluetooth HCI logs of syssi/esphome-jk-bms
  docs/btsnoop_hci_jk-b1a20s15p_hw10xw_sw1007.log (150-byte notifications),
  docs/btsnoop_hci_jk-bd6a24s10p_hw8x_sw806g.log (128/128/64) and
  docs/btsnoop_hci_jk-b2a16s_hw30_sw330.log (JK04, 20-byte notifications): from the first
  notification to the end of the first cell-info record; SNOOP_INTERRUPTED is notifications
  30-38 of the first log, where the app asked for device info again and the BMS broke off a
  cell-info record to answer. Their readings are not published, so the tests check what the
  records say about themselves (pack voltage = sum of cells, SoC = remaining / capacity).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bmsbank.errors import ControlError, FrameError
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.decode import decode_replies, parse_args
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, run_query
from bmsbank.services.poller.plugins.jkbms_ble.family import (
    CMD_CELL_INFO,
    JK02_24S,
    JK02_32S,
    JK04,
    layout_of_record,
    protocol_of,
    request,
)
from bmsbank.services.poller.plugins.jkbms_ble.simulator import Simulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, NotifyLink, PluginContract, SimLink, extract_all

AIOBMSBLE = "patman15/aiobmsble tests/bms/test_jikong_bms.py"
BATMON = "fl4p/batmon-ha bmslib/test/data/jk_issue377.py"
ESPHOME_JK04 = "syssi/esphome-jk-bms esp32-ble-jk04-example-faker.yaml"
JBD_FRAME = "dd0400080f450f3d0f370f3dfec677"  # tests/test_jbd.py (syssi/esphome-jbd-bms capture)

AIO_24S_DEVICE = (
    "55aaeb9003794a4b2d4232413230533230500000000031302e584700000031302e3038000000e4e76c0311000000"
    "4a4b2d424d532d410000000000000000313233340000000000000000000000003232303730310000323033323831"
    "363031320030303030004d6172696f00000000000000006100003132333435360000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000093"
)

AIO_24S_CELLS = (
    "55aaeb9002c8ee0cf20cf10cf00cf00cec0cf00ced0ced0ced0ced0cf00cf10ced0cee0ced0c0000000000000000"
    "0000000000000000ffff0000ef0c05000109360037003900380037003700350041004200360037003a0038003400"
    "3600370000000000000000000000000000000000000000000000ebce0000c70d020019090000b500ba00e4000000"
    "020000385dba0100101503003c000000a465b9006400d9028be86c030101b3060000000000000000000000000700"
    "0100000023040b0000009f19404000000000e2040000000000010003000083d53700000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000bd"
)

AIO_32S_DEVICE = (
    "55aaeb9003a34a4b5f4232413853323050000000000031312e584100000031312e3438000000e4a7460007000000"
    "31327634323061000000000000000000313233340000000000000000000000003234303730340000343034303932"
    "43323236320030303000496e70757420557365726461746100003134303730330000000000000000000000000000"
    "000000000000000000000000fef9ffff1f2d000200000000901f00000000c0d8e732000000010000000000000000"
    "00000704000000000000000000000000000041000000000000000000000000000000000000000000000000000000"
    "0000000009000000640000005f000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000febf21060000000000000000d8"
)

AIO_32S_CELLS = (
    "55aaeb9002adf30cf30cf30cf00cf10cf00cf10cf10c000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000ff000000f20c03000007380037003600370036003700"
    "36003700000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000003601000000008d67000060db020069e4ffff1c0124010000000000000044802c0200503403001500"
    "0000bc624400640000001ef3680001010000000000000000000000000000ff0001000000f1030000230029b43f40"
    "000000005a0a00000001000100060000ef3d080400000000360100000000f103643967001a000000805101000000"
    "0000000000000000000001feff7fdc0f01008003000000b4"
)

AIO_ACK_AT = "aa5590ebc801010000000000000000000000004441540d0a"

AIO_V1927_DEVICE = (
    "55aaeb9003da4a4b2d50423241313653323050000010313941000000000031392e3237000000c02d21006c000000"
    "444720536d61727420424d5300000000313535330000000000000000000000003235313232310000353130323042"
    "4f3439303030343232004a4b2d424d5300000000000000000000393232373436300000000000000000004a4b2d42"
    "4d5300000000000000000000ffffffffafe98d0f00000000901f00000000c0d8f7feef0000000000000000000000"
    "0e00fbe600004345484d5052540000000000ff0f0000000000000000000000000000150000000000000000000000"
    "0000000009080001640000005f0000003c000000320000000000000000000000100e00000532011e0f03a4000000"
    "0000010000000000000000fe9febfe1900000000000002d2"
)

AIO_V1927_CELLS = (
    "55aaeb9002daec0cf00cf00ceb0cef0cef0cf00ced0c000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000ff000000ee0c0500010361005c005f00550060005700"
    "65005700000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000006010000000071670000fe2c050074ceffffe900ec0000000000c607014e48ba030090ca04000f00"
    "0000e9244a00640000000f2e210001010000000000000000000000000000ff00010000006f24000067001cf93e40"
    "0000d800580a0000000101010006010071281f00000000000601f500f000010092b1830b3b040000805101000000"
    "0200000000000000000000feff7fdd2f0101b00f07000084"
)

AIO_V15_DEVICE = (
    "55aaeb9003214a4b5f50423241313653323050000000313541000000000031352e33380000002048010005000000"
    "34313031383439323535350050000000313233340000000000000000000000003235303231300000343130313834"
    "393235353500303030004a4b2d424d5300000000000000000000373132303300000000000000000000004a4b2d42"
    "4d5300000000000000000000feffffff8fe91d0200000000901f00000000c0d8e7fe3f0000010000000000000000"
    "0002ff670000000000000000000000000000ff0f000000000000000000000000000001ff67000000000000000000"
    "0000000009080001640000005f0000003c000000320000000000000000000000100e00000a50011e000000000000"
    "0000000000000000000000fe9fe9ff0f00000000000000f1"
)

AIO_V15_CELLS = (
    "55aaeb9002ac050dfe0cfe0c010d010dfd0cfb0c010dfc0cfb0cfe0cfb0cf80cfb0cfb0c090d0000000000000000"
    "000000000000000000000000000000000000000000000000ffff0000ff0c10000f0c40003d0040003d0041003f00"
    "41003e0041003e0041003d0040003e0041003f000000000000000000000000000000000000000000000000000000"
    "000000000000810000000000e8cf00004ae41900897c000086008000000000000000001986c00000400d03000900"
    "0000b15f1c00640000008c4c760101010000000000000000000000000000ff0001000000050452000000d44e4040"
    "00000000ca1400000001010100060000ea67000000000000cd00c300bf00bd03287f030a1d000000805101000000"
    "0100a50202000000000000feff7fdc2f0101b0cf070000bb"
)

BATMON_SETTINGS = (
    "55aaeb900100ac0d0000c4090000540b0000420e0000480d00000a000000750d00008c0a00007a0d0000160d0000"
    "ba090000007102003c0000003c000000e09304002c0100003c0000001e000000d0070000bc02000058020000bc02"
    "0000580200009cffffff0000000020030000bc02000008000000010000000100000001000000c045040005000000"
    "b80b0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000010000000000"
    "000020a1070080003c3218feffffff1fa96f0200000000dd"
)

BATMON_CELLS = (
    "55aaeb900295270d260d260d260d2d0d2a0d2c0d270d000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000ff000000280d07000401480044003a0041003e003900"
    "3e003d00000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000002801000000003f69000000000000bd010000150113010000000000000063592d0400273804000b00"
    "00008e68310063000000307fef0101010000000000000000000000000000ff00010000003b2404000000f99e3e40"
    "00000000860a0000000001010a0100003fc0020000000000280130f830f84b246c460000b3030000805101000000"
    "0001000000000000000000feff7fdc0f0100800b01000061"
)

BATMON_DEVICE = (
    "55aaeb9003004a4b5f42324138533330500000000000313948000000000031392e3034000000c538ef0106000000"
    "35303431383537344132303235333400313233340000000000000000000000003235303632390000353034313835"
    "373441323032353334004a4b2d424d5300000000000000000000363137343737000000000000000000004a4b2d42"
    "4d5300000000000000000000ffffffff1fa90f0200000000901f00000000c0d8e7333c0000000000000000000000"
    "0100ff670000000000000000000000000000ff0f000000000000000000000000000001ff67000000000000000000"
    "0000000009080001640000005f0000003c000000320000000000000000000000100e00000532011e0a0000000000"
    "0000000000000000000000fe9f29860b000000000000001b"
)

BATMON_JUNK_AFTER_DEVICE = "aa5590ebc801010000000000000000000000004441540d0a"

BATMON_CORRUPT_CELLS = (
    "55aaeb900287240d290d250d240d250d250d240d240d000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000ff000000250d05000100380036003600360036003500"
    "35003500000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000001f01000000002869000000000000000000001a010f01000000000000006400e2040000e204000000"
    "0000f998040064000000d473470101010000000000000000000000000000ff000100000028030000000051b04040"
    "00000000840a000000010001b5060000002a0000000000001f0100000000040333040000a5020000805101000000"
    "0000000000000000000000feff7fdc0f0100800300000000"
)

JK04_DEVICE = (
    "55aaeb9003e74a4b2d42324131365300000000000000332e300000000000332e332e30000000108e320213000000"
    "424d5300000000000000000000000000313233340000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000a9"
)

JK04_SETTINGS = (
    "55aaeb9001500000803f000000000000000000000000000000000000000000000000100000000000404000000000"
    "00000000000000000000000000000000000000000000000000000000a3fd40400000000000000000000000000000"
    "000000000000000088409a9959400ad7a33b00000040010000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000ce"
)

JK04_CELLS = (
    "55aaeb9002c0ff9156407ef256403fc256405eda56405eda56403fc256403fc256405eda56403fc256403fc25640"
    "3fc256401faa56403fc256403fc256401faa56403fc2564000000000000000000000000000000000000000000000"
    "000000000000000000007c1d233e1beb083e56ce143e4d9b153ee0dbcd3d7233cd3d9488013e5e1eea3de517cd3d"
    "e3bbd73df544d23dbe7c013e27b6003edab5fc3d6b51f83da293f33d000000000000000000000000000000000000"
    "00000000000000000000000000000000000043c5564000fec03b00000000ffff0000010001010000963f00000000"
    "00000058a8d84a400000000000000000000000000000000000000000000001010000c80100000000000000000000"
    "0000000000000000000093971c0000000000004822400084"
)

B5A24S_CELLS = (
    "55aaeb9002721544544087fb54403b81544087fb5440d96c5440c3d25440775854404b2455403b81544061be"
    "54409d95544061be54403b815440e90f55409d955440d96c5440000000000000000000000000000000000000"
    "0000000000000000000000000000f732993de93ea13de47c9d3d8a099a3d70909a3d02b2923d5b82943d042d"
    "933dfa3c923d66eb933d883a933d5224973de653983d039a953dd965923d11f49a3d00000000000000000000"
    "00000000000000000000000000000000000000000000000000006c8b54400072373c00000000ffff00000702"
    "02013c5c26c000000000000000806d914a4000000000253b5a0000000000000000000000000000000000d002"
    "d0020000000000000000000003000000000000000000ea0509000098913f0078d53f001e"
)

SNOOP_B1A20S15P = [
    (
        "55aaeb9003744a4b2d4231413230533135500000000031302e585700000031302e30370000007cc6e900"
        "0f0000004a4b2d4231413230533135500000000031323334000000000000000000000000323230333132"
        "000031313232313039323736003030303000496e70757420557365726461746100003132333435360000"
        "000000000000000000000000000000000000000000000000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000072"
    ),
    "aa5590ebc8010100000000000000000000000044",
    (
        "55aaeb90017458020000280a0000b80b0000de0d0000480d000005000000000000000000000000000000"
        "00000000b0090000a08601001e0000003c000000a08601002c0100003c0000003c000000e8030000bc02"
        "000058020000bc02000058020000000000002800000084030000bc020000100000000100000001000000"
        "01000000a0860100dc050000480d00000000000000000000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000081"
    ),
    "aa5590ebc8010100000000000000000000000044",
    (
        "55aaeb900274de0cd50cd80ce10ce00cdd0cd80cdd0ce00cde0cde0cdb0cde0ce00cd90cd90c00000000"
        "000000000000000000000000ffff0000dc0c0c00040c4e004b004a004600460049004400400045004700"
        "52005000470046004000410000000000000000000000000000000000000000000000c4cd0000d5ed0100"
        "a0f6fffffa00ec00f200000000000061187b0100a0860100"
    ),
    (
        "36000000ce0153006400d305fbc6e90001018f06000000000000000000000000070001000000e8030000"
        "0c00b22a3f4000000000e204000000000001000500009c6c150100000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000004"
    ),
]

SNOOP_BD6A24S10P = [
    (
        "55aaeb90030a4a4b2d42443641323453313050000000382e580000000000382e302e364700003ca31100"
        "02000000424d532023310000000000000000000031323334000000000000000000000000323131303130"
        "000031303930373035343035003030303000496e70757420557365726461746100003132333435360000"
        "0000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0043aa5590ebc8010100000000000000000000000044"
    ),
    (
        "55aaeb90010a58020000280a0000540b0000420e0000ac0d00000a000000000000000000000000000000"
        "00000000c4090000a86100001e0000003c00000050c300002c0100003c0000003c00000058020000c201"
        "00005e01000026020000c2010000320000006400000084030000bc020000100000000100000001000000"
        "0100"
    ),
    (
        "0000a8610000dc050000ac0d000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0063aa5590ebc8010100000000000000000000000044"
    ),
    (
        "55aaeb90020ad30ba00be10bdf0bd90b110cb20bff0baf0b250b8d0bd30bc90bbf0be70be30b00000000"
        "000000000000000000000000ffff0000c50bec0005094c014b0146014401430142013f0140013d013a01"
        "3b013c013f01440144013f010000000000000000000000000000000000000000000052bc000000000000"
        "0000"
    ),
    (
        "0000d800d600d000000000000012f8110000a861000008000000e43f03006400dd0844a3110001017f06"
        "0000000000000000000000000700010000000f050000000039c840400000000058aafdff000000010004"
        "000090d95e00000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000"
    ),
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000089",
]

SNOOP_B2A16S = [
    "55aaeb9003064a4b2d4232413136530000000000",
    "0000332e300000000000332e332e30000000c8a6",
    "340213000000424d530000000000000000000000",
    "0000313233340000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "000000000000000000000000000000000000009a",
    "aa5590ebc8010100000000000000000000000044",
    "55aaeb9001060000803f00000000000000000000",
    "0000000000000000000000000000100000000000",
    "4040000000000000000000000000000000000000",
    "0000000000000000000000000000a3fd40400000",
    "0000000000000000000000000000000000000000",
    "88409a9959400ad7a33b00000040010000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000084",
    "aa5590ebc8010100000000000000000000000044",
    "55aaeb900206298b5d409e0a5740be225740b665",
    "5940bbe35740b9a45840d43e5a4016ae59407ef2",
    "564035c6594055de5940d67d594055de5940b665",
    "594035c65940940e5a4000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000e815053ea4b1103e9a921f3e832c1f3e4b3e",
    "e13d6ee3d83d3a5ec43d59fcc53d3e34e23d411a",
    "1a3e5a8a0c3e85470f3e1e360e3e4b9fe73d9d4a",
    "ee3d752de63d0000000000000000000000000000",
    "0000000000000000000000000000000000000000",
    "0000974d59406015d33d00000000ffff00000008",
    "0201004003c000000000000000d8b2294b400000",
    "0000000000000000000000000000000000000000",
    "0101cc0000000000000000000000000000000000",
    "00000000000098fa0700000000000030224000dc",
]

SNOOP_INTERRUPTED = [
    (
        "55aaeb90027dd90cd90ce00ce10cd80cdd0cde0ce00cdc0cd50ce10ce10cde0cd60cd80cdc0c00000000"
        "000000000000000000000000ffff0000dd0c0f000b094e004b004a004600460049004400400045004700"
        "52005000470046004000410000000000000000000000000000000000000000000000c9cd000009170200"
        "d8f5fffffa00ec00f200000000000061157b0100a0860100"
    ),
    (
        "36000000d20153006400d30500c7e90001018f06000000000000000000000000070001000000e8030000"
        "0d00b22a3f4000000000e20400000000000100050000d16c150100000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000e9"
    ),
    (
        "55aaeb90027ee00cd50cd90ce10ce00cde0cd70cd90ce10cde0cde0ce00cd50cd70ce00ce10c00000000"
        "000000000000000000000000ffff0000dc0c0f000b094e004b004a004600460049004400400045004700"
        "52005000470046004000410000000000000000000000000000000000000000000000c4cd0000fc160200"
        "a0f6fffffa00ec00f200000000000061147b0100a0860100"
    ),
    (
        "55aaeb90037f4a4b2d4231413230533135500000000031302e585700000031302e30370000007cc6e900"
        "0f0000004a4b2d4231413230533135500000000031323334000000000000000000000000323230333132"
        "000031313232313039323736003030303000496e70757420557365726461746100003132333435360000"
        "000000000000000000000000000000000000000000000000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000007d"
    ),
    "aa5590ebc8010100000000000000000000000044",
    (
        "55aaeb90017f58020000280a0000b80b0000de0d0000480d000005000000000000000000000000000000"
        "00000000b0090000a08601001e0000003c000000a08601002c0100003c0000003c000000e8030000bc02"
        "000058020000bc02000058020000000000002800000084030000bc020000100000000100000001000000"
        "01000000a0860100dc050000480d00000000000000000000"
    ),
    (
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000008c"
    ),
    "aa5590ebc8010100000000000000000000000044",
]

SNOOP_APP_0X97 = "aa5590eb9700f42af61e98d0e99b64a86aafd62a"
SNOOP_APP_0X96 = "aa5590eb9600c8887d97e4dace50456b704b1ed9"


def raw(hex_: str) -> bytes:
    return bytes.fromhex(hex_)


class TestJkBmsBle(PluginContract):
    plugin_name = "jkbms_ble"
    address = 0
    requests = {
        # aiobmsble _cmd(0x97) / _cmd(0x96); esphome build_frame(0x97/0x96, 0, 0)
        "device_info": "aa5590eb970000000000000000000000000000" + "11",
        "cell_info": "aa5590eb960000000000000000000000000000" + "10",
    }
    captured = [
        Captured(
            AIOBMSBLE + " JK02_32S_v19.27",
            AIO_V1927_CELLS,
            "cell_info",
            {
                "voltage": 26.481,
                "current": -12.684,
                "soc": 78,
                "cycles": 15,
                "soh": 100,
                "remaining": 244.296,
                "capacity": 314.0,
                "balance_current": 1.99,
                "cells": [3.308, 3.312, 3.312, 3.307, 3.311, 3.311, 3.312, 3.309],
                "temperatures": [23.3, 23.6, 24.5, 24.0],
                "mosfet_temperature": 26.2,
                "charge_fet": True,
                "discharge_fet": True,
                "alarm_bits": 0,
            },
        ),  # fmt: skip
        Captured(
            AIOBMSBLE + " JK02_32S_v19.27",
            AIO_V1927_DEVICE,
            "device_info",
            {
                "model": "JK-PB2A16S20P",
                "hardware_version": "19A",
                "software_version": "19.27",
                "name": "DG Smart BMS",
                "serial": "51020BO4",
            },
        ),  # fmt: skip
        Captured(
            BATMON,
            BATMON_SETTINGS,
            "settings",
            {
                "cell_count": 8,
                "capacity": 280.0,
                "balancer_enabled": 1,
            },
        ),  # fmt: skip
    ]

    def test_echo_is_dropped_by_the_transport(self, plugin: Plugin) -> None:
        """BLE has no adapter echo (the serial contract's test): a BLE link cuts records instead.

        A poll cycle through the simulator with every reply delivered in 20-byte notifications
        (the ATT payload at the default MTU), what is left of one exchange dropped before the next
        as BleTransport.drain does, decodes to the model's values without a byte of noise.
        """

        models = self.make_models()
        addr = next(iter(models))
        link, stats, parts = NotifyLink(Simulator(models)), LinkStats(), {}
        for q in plugin.queries(addr):
            parts[q.part] = run_query(plugin, link, q, addr, parts, stats)
        state = validate_state(make_state("sim", addr, plugin.name, 0, plugin.state(parts), {}))
        self.check_state(state, models[addr])
        assert stats.noise_bytes == 0 and stats.checksum == 0

    def test_registered(self, plugin: Plugin) -> None:
        """BLE: no serial speed; one pack per device at address 0; GATT 0xFFE0/0xFFE1."""
        info = plugins.families()[self.plugin_name]
        assert plugin.info is info and plugin.name == "jkbms_ble" and info.link == "BLE"
        assert info.baudrate == 0 and not info.multidrop and list(info.addresses) == [0]
        assert info.ble is not None
        assert info.ble.service == "0000ffe0-0000-1000-8000-00805f9b34fb"
        assert info.ble.notify == info.ble.write == "0000ffe1-0000-1000-8000-00805f9b34fb"
        assert not info.ble.with_response and "JK-" in info.ble.names
        assert plugins.simulator_class(self.plugin_name).family is type(plugin)


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("jkbms_ble")


def notifications(data: bytes, size: int = 20) -> list[tuple[None, bytes]]:
    return [(None, data[i : i + size]) for i in range(0, len(data), size)]


def state_of(plugin: Plugin, *records: str, size: int = 20) -> dict:
    parts, _, left = decode_replies(plugin, notifications(b"".join(map(raw, records)), size))
    assert left == 0
    return validate_state(make_state("ble", 0, plugin.name, 0, plugin.state(parts), {}))


@pytest.mark.parametrize(
    ("device", "cells", "protocol", "expect"),
    [
        (AIO_24S_DEVICE, AIO_24S_CELLS, JK02_24S, {
            "voltage": 52.971, "current": 2.329, "soc": 56.0, "cycles": 60,
            "remaining": 113.245, "capacity": 202.0, "temperatures": [18.1, 18.6],
            "mosfet_temperature": 22.8,
            "cells": [3.310, 3.314, 3.313, 3.312, 3.312, 3.308, 3.312, 3.309, 3.309, 3.309,
                      3.309, 3.312, 3.313, 3.309, 3.310, 3.309],
        }),
        (AIO_32S_DEVICE, AIO_32S_CELLS, JK02_32S, {
            "voltage": 26.509, "current": -7.063, "soc": 68.0, "cycles": 21,
            "remaining": 142.464, "capacity": 210.0, "mosfet_temperature": 31.0,
            "temperatures": [28.4, 29.2],  # firmware 11: no T4/T5 although their bits are set
            "cells": [3.315, 3.315, 3.315, 3.312, 3.313, 3.312, 3.313, 3.313],
        }),
        (AIO_V15_DEVICE, AIO_V15_CELLS, JK02_32S, {
            "voltage": 53.224, "current": 31.881, "soc": 25.0, "cycles": 9,
            "remaining": 49.286, "capacity": 200.0, "mosfet_temperature": 12.9,
            "temperatures": [13.4, 12.8, 19.5, 19.1],
            "cells": [3.333, 3.326, 3.326, 3.329, 3.329, 3.325, 3.323, 3.329, 3.324, 3.323,
                      3.326, 3.323, 3.320, 3.323, 3.323, 3.337],
        }),
    ],
    ids=["24S-sw10.08", "32S-sw11.48", "32S-sw15.38"],
)  # fmt: skip
def test_captured_streams_decode_with_the_detected_layout(
    device: str, cells: str, protocol: str, expect: dict
) -> None:
    """aiobmsble's streams (device info, confirmation + AT, cell info) in 20-byte pieces."""
    plugin = plugins.load("jkbms_ble")
    state = state_of(plugin, device, AIO_ACK_AT, cells)
    assert plugin.protocol == protocol
    for key, value in expect.items():
        assert state[key] == pytest.approx(value, abs=1e-6), key
    # aiobmsble: chrg_mosfet and dischrg_mosfet True, problem_code 0, battery_health 100
    assert state["charge_fet"] is True and state["discharge_fet"] is True
    assert state["soh"] == 100.0 and not any(state["alarms"].values())


def test_decode_cli_functions_take_one_hex_argument_per_notification(plugin: Plugin) -> None:
    """``bmsbank decode --bms jkbms_ble HEX HEX ...``: what cmd_decode runs, on the pieces."""
    stream = raw(AIO_V1927_DEVICE) + raw(AIO_ACK_AT) + raw(AIO_V1927_CELLS)
    args = [stream[i : i + 20].hex(" ") for i in range(0, len(stream), 20)]
    parts, stats, left = decode_replies(plugin, parse_args(args))
    fields = plugin.state(parts)
    assert fields["voltage"] == pytest.approx(26.481) and fields["soc"] == 78.0
    assert fields["current"] == pytest.approx(-12.684)  # discharging
    assert fields["hardware"] == "JK-PB2A16S20P hw 19A sw 19.27" and left == 0
    assert stats.noise_bytes == len(raw(AIO_ACK_AT))  # the confirmation and "AT\r\n"


@pytest.mark.parametrize("size", range(1, 301))
def test_records_split_at_every_byte_boundary(size: int) -> None:
    plugin = plugins.load("jkbms_ble")
    state = state_of(plugin, AIO_24S_DEVICE, AIO_24S_CELLS, size=size)
    assert state["voltage"] == pytest.approx(52.971) and state["current"] == pytest.approx(2.329)
    assert len(state["cells"]) == 16


def test_junk_between_records_is_counted_and_skipped(plugin: Plugin) -> None:
    """batmon-ha #377: "AT\\r\\n" and the C8 confirmation between records; a JBD frame."""
    junk = raw(BATMON_JUNK_AFTER_DEVICE) + b"AT\r\n" + raw(JBD_FRAME) + b"\x55\xaa"
    stream = raw(BATMON_DEVICE) + junk + raw(BATMON_SETTINGS) + b"AT\r\n" + raw(BATMON_CELLS)
    parts, stats, left = decode_replies(plugin, notifications(stream))
    assert set(parts) == {"device_info", "settings", "cell_info"} and left == 0
    assert stats.noise_bytes == len(junk) + 4
    state = plugin.state(parts)
    assert state["hardware"] == "JK_B2A8S30P hw 19H sw 19.04"
    assert len(state["cells"]) == 8 and state["voltage"] == pytest.approx(
        sum(state["cells"]), abs=0.01
    )
    assert state["current"] > 0 and state["soc"] == 99.0


def test_bad_sum8_is_counted_and_the_next_record_decodes(plugin: Plugin) -> None:
    stream = raw(BATMON_CORRUPT_CELLS) + raw(AIO_V1927_CELLS)
    frames, errors, _ = extract_all(plugin, stream)
    assert [e.kind for e in errors] == ["checksum"]
    assert frames == [raw(AIO_V1927_CELLS)]


def test_another_familys_frames_are_noise(plugin: Plugin) -> None:
    frames, errors, stats = extract_all(plugin, raw(JBD_FRAME) * 3)
    assert not frames and not errors and stats.noise_bytes == 3 * len(raw(JBD_FRAME))


def test_unknown_record_type_is_unexpected(plugin: Plugin) -> None:
    record = bytearray(raw(AIO_V1927_CELLS))
    record[4] = 0x05  # logbook: not decoded
    record[-1] = sum(record[:-1]) & 0xFF
    with pytest.raises(FrameError) as exc:
        plugin.parse(bytes(record))
    assert exc.value.kind == "unexpected"


def test_jk04_decodes_cells_but_gives_no_state(plugin: Plugin) -> None:
    stream = raw(JK04_DEVICE) + raw(JK04_SETTINGS) + raw(JK04_CELLS)
    parts, _, left = decode_replies(plugin, notifications(stream))
    assert plugin.protocol == JK04 and left == 0
    info = parts["cell_info"]
    assert len(info["cells"]) == 16 and info["voltage"] == pytest.approx(53.691, abs=0.001)
    assert info["cells"][0] == pytest.approx(3.3527, abs=1e-4)
    with pytest.raises(FrameError, match="no current"):
        plugin.state(parts)
    with pytest.raises(ControlError):
        plugin.control(SimLink(Simulator({0: BatteryModel()})), 0, "charge", False, parts)


@pytest.mark.parametrize(
    ("hw", "sw", "protocol"),
    [("10.XG", "10.08", JK02_24S), ("11.XA", "11.48", JK02_32S), ("10.XW", "11.21h", JK02_32S),
     ("19A", "19.27", JK02_32S), ("3.0", "3.3.0", JK04), ("8.x", "8.1.2H", JK02_24S),
     ("", "", JK02_32S)],
)  # fmt: skip
def test_protocol_from_device_info(hw: str, sw: str, protocol: str) -> None:
    """esphome-jk-bms README's device list: firmware >= 11 is 32S, hardware <= 3 is JK04."""
    assert protocol_of({"hardware_version": hw, "software_version": sw}) == protocol


def test_protocol_option_overrides_detection() -> None:
    plugin = plugins.load("jkbms_ble", {"protocol": JK02_24S})
    parts, _, _ = decode_replies(plugin, [(None, raw(AIO_32S_DEVICE))])
    assert plugin.protocol == JK02_24S and parts["device_info"]["software_version"] == "11.48"
    with pytest.raises(ValueError):
        plugins.load("jkbms_ble", {"protocol": "JK03"})


def test_poll_schedule_and_device_info_required_under_auto(plugin: Plugin) -> None:
    queries = {q.part: q for q in plugin.queries(0)}
    assert queries["device_info"].every == 0 and queries["device_info"].required
    assert queries["cell_info"].every == 1 and queries["cell_info"].required
    assert queries["settings"].every == 60 and not queries["settings"].required
    fixed = plugins.load("jkbms_ble", {"protocol": JK02_32S})
    assert not {q.part: q for q in fixed.queries(0)}["device_info"].required
    with pytest.raises(ValueError):
        plugin.queries(1)


def test_a_query_passes_over_streamed_records_of_other_kinds(plugin: Plugin) -> None:
    """0x96 is answered by settings then cell info: the cell-info query takes the latter."""

    class Streaming(SimLink):
        def exchange(self, request: bytes, extract):  # type: ignore[no-untyped-def]
            self.sent.append(request)
            self.buf = bytearray(raw(BATMON_SETTINGS) + raw(BATMON_DEVICE) + raw(BATMON_CELLS))
            return self.receive(extract)

    link, stats = Streaming(None), LinkStats()
    q = {q.part: q for q in plugin.queries(0)}["cell_info"]
    fields = run_query(plugin, link, q, 0, {}, stats)
    assert len(fields["cells"]) == 8 and link.sent == [request(CMD_CELL_INFO)]
    assert plugin.extract(bytearray(raw(BATMON_SETTINGS)), stats) is not None  # expects reset


@pytest.mark.parametrize("protocol", [JK02_24S, JK02_32S])
def test_simulator_round_trip_in_both_layouts(protocol: str) -> None:
    plugin = plugins.load("jkbms_ble")
    model = BatteryModel(cells=16, soc=40.0, current=-8.5, temperatures=[20.5, 22.0])
    link, stats, parts = SimLink(Simulator({0: model}, protocol=protocol)), LinkStats(), {}
    for q in plugin.queries(0):
        parts[q.part] = run_query(plugin, link, q, 0, parts, stats)
    state = validate_state(make_state("sim", 0, plugin.name, 0, plugin.state(parts), {}))
    assert plugin.protocol == protocol
    assert state["current"] == pytest.approx(-8.5, abs=0.01)
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.01)
    assert state["temperatures"] == pytest.approx([20.5, 22.0], abs=0.1)
    assert state["bms_ccl"] == 100.0 and len(state["cells"]) == 16


@pytest.mark.parametrize("action", ["charge", "discharge", "balance"])
def test_switch_writes_are_read_back(plugin: Plugin, action: str) -> None:
    model = BatteryModel(cells=8)
    link = SimLink(Simulator({0: model}))
    plugin.control(link, 0, action, False, {})
    register = {"charge": 0x1D, "discharge": 0x1E, "balance": 0x1F}[action]
    # esphome build_frame(register, 0, 4): AA 55 90 EB <reg> 04 00000000 ... sum8
    assert link.sent[0] == request(register, 0, 4) and link.sent[0][5] == 4
    assert link.sent[1] == request(CMD_CELL_INFO)
    attribute = {"charge": "charge_fet", "discharge": "discharge_fet", "balance": "balancer"}
    assert getattr(model, attribute[action]) is False
    plugin.control(link, 0, action, True, {})
    assert getattr(model, attribute[action]) is True


def test_a_switch_that_does_not_change_is_refused(plugin: Plugin) -> None:
    class Deaf(Simulator):
        def answer(self, request: bytes):  # type: ignore[no-untyped-def]
            return b"" if request[5] == 4 else super().answer(request)

    with pytest.raises(ControlError, match="still reads 1"):
        plugin.control(SimLink(Deaf({0: BatteryModel()})), 0, "charge", False, {})


@pytest.mark.parametrize(
    ("record", "layout"),
    [(AIO_24S_CELLS, JK02_24S), (AIO_32S_CELLS, JK02_32S), (AIO_V15_CELLS, JK02_32S),
     (AIO_V1927_CELLS, JK02_32S), (BATMON_CELLS, JK02_32S), (JK04_CELLS, JK04),
     (B5A24S_CELLS, JK04)],
    ids=["24S", "32S-11.48", "32S-15.38", "32S-19.27", "32S-19.04", "JK04", "JK04-B5A24S"],
)  # fmt: skip
def test_a_cell_info_record_shows_its_layout(record: str, layout: str) -> None:
    assert layout_of_record(raw(record)) == layout


def test_the_record_decides_where_it_shows_its_layout() -> None:
    """A 24S record decodes alone; the B5A24S's JK04 records despite a 24S-looking device."""
    plugin = plugins.load("jkbms_ble")
    state = state_of(plugin, AIO_24S_CELLS)
    assert state["voltage"] == pytest.approx(52.971) and state["current"] == pytest.approx(2.329)
    assert plugin.protocol == JK02_24S
    plugin.detected = protocol_of({"hardware_version": "8.X", "software_version": "8.0.3M"})
    assert plugin.detected == JK02_24S
    parts, _, _ = decode_replies(plugin, notifications(raw(B5A24S_CELLS)))
    info = parts["cell_info"]
    assert plugin.protocol == JK04 and len(info["cells"]) == 16
    assert info["cells"][0] == pytest.approx(3.3167, abs=1e-4)
    assert info["voltage"] == pytest.approx(sum(info["cells"]))


def test_bmsbank_decode_cli_on_a_notification_stream() -> None:
    """``bmsbank decode jkbms_ble HEX HEX ...``: one argument per 20-byte notification."""
    stream = raw(AIO_24S_DEVICE) + raw(AIO_ACK_AT) + raw(AIO_24S_CELLS)
    args = [stream[i : i + 20].hex() for i in range(0, len(stream), 20)]
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "decode", "jkbms_ble", *args],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["bms"] == "jkbms_ble" and state["pack"] == "decode:0"
    assert state["voltage"] == pytest.approx(52.971) and state["current"] == pytest.approx(2.329)
    assert state["soc"] == 56.0 and len(state["cells"]) == 16
    assert state["hardware"] == "JK-B2A20S20P hw 10.XG sw 10.08"
    assert state["link"]["noise_bytes"] == len(raw(AIO_ACK_AT))


def test_bmsbank_decode_cli_rejects_a_bad_sum8() -> None:
    bad = bytearray(raw(AIO_V1927_CELLS))
    bad[100] ^= 0x01
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "decode", "jkbms_ble", bad.hex()],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "checksum" in out.stderr


def _snoop_parts(plugin: Plugin, stream: list[str]) -> dict:
    parts, stats, left = decode_replies(plugin, [(None, raw(n)) for n in stream])
    assert left == 0 and stats.checksum == 0
    return parts


@pytest.mark.parametrize(
    ("stream", "model", "volts", "soc", "current", "limits"),
    [(SNOOP_B1A20S15P, "JK-B1A20S15P hw 10.XW sw 10.07", 52.676, 97.0, -2.4, (100.0, 100.0)),
     (SNOOP_BD6A24S10P, "JK-BD6A24S10P hw 8.X sw 8.0.6G", 48.21, 18.0, 0.0, (25.0, 50.0))],
    ids=["B1A20S15P-150-byte-MTU", "BD6A24S10P-128-byte-MTU"],
)  # fmt: skip
def test_btsnoop_streams_of_24s_devices(
    stream: list[str], model: str, volts: float, soc: float, current: float, limits: tuple
) -> None:
    plugin = plugins.load("jkbms_ble")
    parts = _snoop_parts(plugin, stream)
    assert set(parts) == {"device_info", "settings", "cell_info"} and plugin.protocol == JK02_24S
    state = validate_state(make_state("ble", 0, plugin.name, 0, plugin.state(parts), {}))
    assert state["hardware"] == model and len(state["cells"]) == 16
    assert state["voltage"] == pytest.approx(volts) and state["current"] == pytest.approx(current)
    assert state["voltage"] == pytest.approx(sum(state["cells"]), abs=0.005)
    assert state["soc"] == soc == round(100 * state["remaining"] / state["capacity"])
    assert (state["bms_ccl"], state["bms_dcl"]) == limits
    assert len(state["temperatures"]) == 2 and state["mosfet_temperature"] is not None


def test_btsnoop_stream_of_a_jk04_device() -> None:
    plugin = plugins.load("jkbms_ble")
    parts = _snoop_parts(plugin, SNOOP_B2A16S)
    assert plugin.protocol == JK04 and parts["device_info"]["software_version"] == "3.3.0"
    info = parts["cell_info"]
    assert len(info["cells"]) == 16 and info["cells"][0] == pytest.approx(3.4616, abs=1e-4)
    assert info["voltage"] == pytest.approx(sum(info["cells"]))
    with pytest.raises(FrameError, match="no current"):
        plugin.state(parts)


def test_btsnoop_record_broken_off_by_another_is_counted_and_skipped(plugin: Plugin) -> None:
    """The BMS stops a cell-info record after 150 bytes to answer 0x97: one bad sum8."""
    buf, stats, seen = bytearray(), LinkStats(), []
    for notification in SNOOP_INTERRUPTED:
        buf += raw(notification)
        while True:
            try:
                frame = plugin.extract(buf, stats)
            except FrameError as exc:
                stats.count(exc.kind)
                seen.append(exc.kind)
                continue
            if frame is None:
                break
            seen.append(plugin.parse(frame)[0])
    assert seen == ["cell_info", "checksum", "device_info", "settings"] and not buf
    assert stats.checksum == 1 and stats.noise_bytes == 149 + 2 * 20  # the rest, 2 confirmations


def test_simulator_answers_the_jk_apps_own_requests() -> None:
    """The app fills bytes 6-18 with noise (the sum8 still covers them): answered all the same."""
    sim = Simulator({0: BatteryModel(cells=8)})
    device = sim.feed(raw(SNOOP_APP_0X97))
    assert [r[4] for r in device] == [0x03, 0xC8]
    assert [r[4] for r in sim.feed(raw(SNOOP_APP_0X96))] == [0x01, 0x02]
