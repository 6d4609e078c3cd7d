"""A simulated RS485 bus of KS48100 packs: the Daren 485 simulator, listening for ``>`` requests.

Everything else (what is answered, what gets silence, how values are encoded) is the Daren 485
simulator's; replies start with ``~`` and repeat the request's CID1.
"""

from __future__ import annotations

from typing import ClassVar

from bmsbank.native.spec import AsciiHex, FrameSpec
from bmsbank.services.poller.plugins.daren_485 import simulator as daren
from bmsbank.services.poller.plugins.ks48100.family import Family


class Simulator(daren.Simulator):
    """One RS485 bus with KS48100 packs at the addresses of ``packs``."""

    family: ClassVar[type[Family]] = Family
    request_framing: ClassVar[FrameSpec | None] = AsciiHex(soi=b">")
