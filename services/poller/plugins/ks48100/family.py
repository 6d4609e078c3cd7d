r"""KS48100 (SNS01 / Ho20 boards of PAPool, Bemory, CERRNSS, VoltPolska packs): ``>`` DR-1363.

The Daren 485 protocol (see :mod:`..daren_485.family`: frames, layouts, checks, status bits,
where sources disagree) with other requests: they start with ``>`` instead of ``~``, services
0x42, 0x47 and 0x51 go to CID1 0x42 (0x42 and 0x51 with no COMMAND INFO, 0x47 with the address),
B0 to CID1 0x4A with function length 0x56 for module 3. Replies are read as Daren's (VER 0x22,
the same layouts) with two things left open, since the public driver checks neither and no raw
reply is public: a reply may start with ``~`` or ``>`` (the driver's notes say the board "started
using a new SOI", not in which direction), and its CID1 may be 0x42 or 0x4A (a Pylon-style slave
repeats the request's). The realtime reply takes long on these boards: the driver waits 3 s.

Sources (facts only, no code copied):

- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/ks48100.py (PR #168, by
  sniffing the vendor's DrStartApp on an "SNS01 16S100A Ho20-T1 02.02.01", serial CER2408-04):
  ``create_command`` (``>`` SOI), ``create_command_get_*`` (CID1 and COMMAND INFO per service),
  ``get_realtime_data`` (``sleep(3.0)``), ``_parse_realtime_payload`` (Daren's 0x42 layout),
  ``get_cap_params`` / ``get_serial`` (Daren's B0 layouts); ``dbus-serialbattery.py`` tries it at
  9600 Bd. Its earlier form ``sns01_485.py`` reads the same offsets for 16 cells.

No public capture of a KS48100 RS485 exchange was found: the frames in tests/test_ks48100.py are
built from this description (requests byte for byte as DSB sends them) and say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from bmsbank.native.spec import AsciiHex
from bmsbank.services.poller.plugins.daren_485 import family as daren
from bmsbank.services.poller.plugins.daren_485.family import ADR, Service
from bmsbank.services.poller.plugins.ks48100 import INFO

SERIAL_FUNCTION_LENGTH = 0x56  # DSB's B0 module 3 request (Daren sends 0x00)


class Family(daren.Family):
    """KS48100: Daren 485 with ``>`` requests and CID1 0x42 for services 0x42, 0x47 and 0x51."""

    info = INFO
    framing = AsciiHex(soi=b"~>")  # replies: Daren's "~" or the requests' ">"
    #: DSB waits 3 s for the realtime reply ("this slower board"), 1 s for the serial
    reply_timeout: ClassVar[float] = 3.0
    request_soi: ClassVar[bytes] = b">"
    services: ClassVar[Mapping[str, Service]] = {
        daren.REALTIME: Service(0x42, 0x42),
        daren.PARAMS: Service(0x42, 0x47, (ADR,)),
        daren.CAPACITY: Service(0x4A, daren.SERVICE_B0, (ADR, 0x01, daren.MODULE_CAP, 0xFF, 0x00)),
        daren.SERIAL: Service(0x4A, daren.SERVICE_B0,
                              (ADR, 0x01, daren.MODULE_MFG, 0xFF, SERIAL_FUNCTION_LENGTH)),
        daren.MAKER: Service(0x42, 0x51),
    }  # fmt: skip
