"""The SPI transport: the serial transport's interface over spidev or the socket stand-in."""

from __future__ import annotations

import sys

import pytest

from bmsbank.errors import LinkTimeout, TransportError
from bmsbank.services.poller import plugins
from bmsbank.services.poller.service import transport_for
from bmsbank.services.poller.spi_transport import SpiSocketServer, SpiTransport
from bmsbank.services.poller.transport import SerialTransport
from tests.test_poller import port_config


class Inverter:
    """A chip that shifts out the complement of what it is sent (a stand-in's ``transfer``)."""

    def __init__(self) -> None:
        self.packs: dict = {}
        self.short = False  #: answer one byte less (a broken stand-in)

    def transfer(self, data: bytes) -> bytes:
        reply = bytes(b ^ 0xFF for b in data)
        return reply[:-1] if self.short else reply


def two_bytes(buf: bytearray) -> bytes | None:
    """An ``extract`` for two-byte frames."""
    if len(buf) < 2:
        return None
    frame = bytes(buf[:2])
    del buf[:2]
    return frame


@pytest.fixture
def inverter(tmp_path):
    server = SpiSocketServer(Inverter(), str(tmp_path / "chip.sock")).start()
    yield server
    server.stop()


def test_a_transaction_returns_what_the_chip_shifted_out(inverter):
    transport = SpiTransport(inverter.device, 1_000_000)
    assert not transport.is_open
    transport.open()
    try:
        transport.send(b"\x00\x0f\xf0\xff")
        assert transport.receive(two_bytes, 0.1) == b"\xff\xf0"
        assert not transport.settled  # two bytes left: the next frame of the same reply
        assert transport.receive(two_bytes, 0.1) == b"\x0f\x00"
        assert transport.settled
        with pytest.raises(LinkTimeout, match="timeout"):
            transport.receive(two_bytes, 0.1)  # nothing more comes: SPI answers only when asked
        transport.send(b"\x01")
        with pytest.raises(LinkTimeout, match="truncated"):
            transport.receive(two_bytes, 0.1)
        assert transport.drain() == 1 and transport.echoes == 0
        assert inverter.transactions == 2
    finally:
        transport.close()
    assert not transport.is_open
    transport.close()  # twice is fine


def test_a_closed_transport_and_a_short_reply_are_port_errors(inverter):
    transport = SpiTransport(inverter.device, 500_000)
    with pytest.raises(TransportError, match="not open"):
        transport.send(b"\x00")
    transport.open()
    try:
        with pytest.raises(TransportError, match="1-4096 bytes"):
            transport.send(b"")
        inverter.chip.short = True  # the client waits for the fourth byte, then gives up
        with pytest.raises(TransportError, match="transfer spisim:.* timed out"):
            transport.send(b"\x00\x00\x00\x00")
    finally:
        transport.close()


def test_a_vanished_stand_in_is_a_port_error(tmp_path):
    path = str(tmp_path / "gone.sock")
    with pytest.raises(TransportError, match="cannot open spisim:"):
        SpiTransport("spisim:" + path, 500_000).open()
    server = SpiSocketServer(Inverter(), path).start()
    transport = SpiTransport(server.device, 500_000)
    transport.open()
    server.stop()
    try:
        with pytest.raises(TransportError, match="transfer spisim:"):
            transport.send(b"\x00\x00")
    finally:
        transport.close()


def test_device_names_and_a_missing_spidev_are_clear_port_errors(monkeypatch):
    with pytest.raises(TransportError, match="not an SPI device"):
        SpiTransport("/dev/ttyUSB0", 500_000).open()
    monkeypatch.setitem(sys.modules, "spidev", None)  # as on a machine without it
    with pytest.raises(TransportError, match="pip install spidev"):
        SpiTransport("/dev/spidev0.0", 500_000).open()


def test_a_real_spidev_without_the_device_is_a_port_error():
    import spidev  # noqa: F401  (installed with the test extra: the real module, no device)

    transport = SpiTransport("/dev/spidev9.9", 500_000)
    with pytest.raises(TransportError, match="cannot open /dev/spidev9.9"):
        transport.open()
    assert not transport.is_open


def test_the_poller_picks_the_transport_by_the_family_link():
    spi = transport_for(port_config("spisim:/tmp/x", "mnb", [0]), plugins.load("mnb"))
    assert isinstance(spi, SpiTransport) and spi.baudrate == 500_000
    custom = port_config("/dev/spidev0.1", "mnb", [0], baudrate=1_000_000)
    assert transport_for(custom, plugins.load("mnb")).baudrate == 1_000_000
    serial = transport_for(port_config("/dev/ttyUSB0", "jbd", [1]), plugins.load("jbd"))
    assert isinstance(serial, SerialTransport) and serial.baudrate == 9600
