"""The BLE transport with real bleak against the fake BlueZ on a private dbus-daemon.

Every test starts its own daemon and fake BlueZ (services/poller/simulators/fakebluez.py): bleak's
BlueZ manager reconnects to the new bus, so no state leaks from one test to the next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time

import pytest

from bmsbank.errors import FrameError, LinkTimeout, TransportError
from bmsbank.services.poller import plugins
from bmsbank.services.poller.ble_transport import RX_MAX, BleTransport, ble_loop, parse_device
from bmsbank.services.poller.plugins.base import LinkStats
from bmsbank.services.poller.plugins.jbd.control import read_request
from bmsbank.services.poller.plugins.jbd.family import REG_BASIC, REG_CELLS
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.fakebluez import FakeBluez

MAC = "AA:BB:CC:DD:EE:01"
JBD_BLE = plugins.info("jbd").ble


@pytest.fixture
def fake(monkeypatch):
    bluez = FakeBluez(rssi_interval=0.1)
    for key, value in bluez.env().items():
        monkeypatch.setenv(key, value)
    bluez.add_adapter("hci0")
    yield bluez
    bluez.stop()


@pytest.fixture
def opened(fake):
    """A JBD device on hci0 and a transport connected to it."""
    model = BatteryModel(cells=4, soc=42.0, current=-3.0)
    fake.add_device("hci0", MAC, "JBD-SP04S001", "jbd", model)
    transport = BleTransport(f"ble:hci0/{MAC}", JBD_BLE)
    transport.scan_timeout = 3.0
    transport.open()
    yield transport, model
    transport.close()


def jbd_extract():
    family, stats = plugins.load("jbd"), LinkStats()
    return (lambda buf: family.extract(buf, stats)), stats


def expected_reply(model: BatteryModel, request: bytes) -> bytes:
    """What the JBD simulator answers to ``request`` (the bytes the device must deliver)."""
    (reply,) = plugins.simulator_class("jbd")({1: model}).feed(request)
    return reply


async def _drop_sockets(client):
    """Close bleak's acquired notification sockets of ``client`` (as a process exit would)."""
    fds = client._backend._notification_fds
    for path in list(fds):
        fd = fds.pop(path)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)


def test_device_strings_are_parsed_and_bad_ones_refused():
    assert parse_device("ble:hci0/aa:bb:cc:dd:ee:01") == ("hci0", "AA:BB:CC:DD:EE:01")
    for bad in (
        "ble:hci0",
        "ble:/AA:BB:CC:DD:EE:01",
        "ble:hci0/AA:BB:CC:DD:EE",
        "hci0/AA:BB:CC:DD:EE:01",
    ):
        with pytest.raises(ValueError, match="ble:<adapter>/<MAC>"):
            parse_device(bad)


def test_found_by_mac_connected_with_notifications_and_closed(fake, opened):
    transport, _ = opened
    assert transport.is_open and transport.baudrate == 0
    stats = fake.stats(MAC)
    # notifications through an acquired socket (AcquireNotify), not a StartNotify session
    assert stats["connected"] and stats["acquired"] and not stats["notifying"]
    assert stats["connects"] == 1 and stats["acquires"] == 1
    transport.close()
    assert not transport.is_open
    stats = fake.stats(MAC)
    assert not stats["connected"] and not stats["acquired"]
    transport.close()  # safe when closed


def test_a_reply_is_reassembled_at_every_byte_boundary(fake, opened):
    transport, model = opened
    extract, stats = jbd_extract()
    request = read_request(REG_BASIC)
    reply = expected_reply(model, request)
    assert len(reply) > 30
    for chunk in range(1, len(reply) + 1):
        fake.set_chunk(MAC, chunk)
        transport.drain()
        transport.send(request)
        assert transport.receive(extract, 1.0) == reply, f"chunk {chunk}"
        assert transport.settled and not transport.rx
    assert stats.noise_bytes == 0
    notified = fake.stats(MAC)["notifications"]
    # one notification per piece: ceil(len / chunk) summed over every chunk size
    assert notified == sum(-(-len(reply) // c) for c in range(1, len(reply) + 1))


def test_two_requests_two_replies_in_order(opened):
    transport, model = opened
    extract, _ = jbd_extract()
    for register in (REG_BASIC, REG_CELLS, REG_BASIC):
        request = read_request(register)
        transport.drain()
        transport.send(request)
        assert transport.receive(extract, 1.0) == expected_reply(model, request)


def test_unknown_mac_is_a_transport_error(fake):
    transport = BleTransport("ble:hci0/AA:BB:CC:DD:EE:99", JBD_BLE)
    transport.scan_timeout = 0.5
    with pytest.raises(TransportError, match="not seen on hci0"):
        transport.open()
    assert not transport.is_open


def test_missing_adapter_is_a_transport_error(fake):
    transport = BleTransport(f"ble:hci7/{MAC}", JBD_BLE)
    with pytest.raises(TransportError, match="cannot scan on hci7"):
        transport.open()
    with pytest.raises(TransportError, match="not connected"):
        transport.send(b"\xdd")


def test_a_silent_device_times_out_then_counts_as_stalled(fake, opened):
    transport, _ = opened
    fake.mute(MAC)
    extract, _ = jbd_extract()
    for _ in range(transport.stall_after - 1):
        transport.drain()
        transport.send(read_request(REG_BASIC))
        with pytest.raises(LinkTimeout, match="timeout"):
            transport.receive(extract, 0.2)
    transport.drain()
    transport.send(read_request(REG_BASIC))
    with pytest.raises(TransportError, match="notifications stalled"):
        transport.receive(extract, 0.2)
    assert fake.stats(MAC)["writes"] == transport.stall_after


def test_bytes_between_timeouts_reset_stall_detection(fake, opened):
    transport, model = opened
    extract, _ = jbd_extract()
    for _ in range(3 * transport.stall_after):
        fake.mute(MAC)
        transport.drain()
        transport.send(read_request(REG_BASIC))
        with pytest.raises(LinkTimeout):
            transport.receive(extract, 0.15)
        fake.mute(MAC, False)
        transport.drain()
        transport.send(read_request(REG_CELLS))
        assert transport.receive(extract, 1.0) == expected_reply(model, read_request(REG_CELLS))


def test_the_poller_thread_is_woken_once_per_whole_reply(fake, opened):
    transport, model = opened
    fake.set_chunk(MAC, 1)  # one notification per byte: the loop frames, the thread waits
    calls = []
    extract, _ = jbd_extract()

    def framer(buf):
        calls.append(threading.current_thread() is threading.main_thread())
        return extract(buf)

    request = read_request(REG_CELLS)
    transport.drain()
    transport.send(request)
    assert transport.receive(framer, 1.0) == expected_reply(model, request)
    assert len(calls) >= len(expected_reply(model, request)) // 2  # once per notification
    assert calls.count(True) <= 1  # at most the first look, in this thread; the rest in the loop


def test_a_framer_that_fails_unexpectedly_fails_the_poller_thread(opened):
    transport, _ = opened

    def broken(buf):
        if buf:
            raise ZeroDivisionError("a framer bug")
        return None

    transport.drain()
    transport.send(read_request(REG_BASIC))
    with pytest.raises(ZeroDivisionError, match="a framer bug"):
        transport.receive(broken, 1.0)  # raised here (the poller thread dies and is restarted)


def test_unasked_notifications_are_kept_bounded(opened):
    transport, _ = opened
    for _ in range(100):  # a JK streams records while nobody asks; the next request drains them
        transport._on_notify(None, bytearray(1000))
    assert len(transport.rx) == RX_MAX == 65536


def test_a_garbled_reply_is_a_frame_error_counted_as_checksum(fake, opened):
    transport, _ = opened
    fake.garble(MAC)
    extract, stats = jbd_extract()
    transport.drain()
    transport.send(read_request(REG_BASIC))
    with pytest.raises(FrameError) as info:
        transport.receive(extract, 1.0)
    assert info.value.kind == "checksum"


def test_a_vanished_device_breaks_the_link(fake, opened):
    transport, _ = opened
    extract, _ = jbd_extract()
    fake.vanish(MAC)
    with pytest.raises(TransportError, match="disconnected"):
        transport.drain()
        transport.send(read_request(REG_BASIC))
        transport.receive(extract, 2.0)
    with pytest.raises(TransportError, match="disconnected"):
        transport.send(read_request(REG_BASIC))  # until closed, every use says why
    transport.close()
    assert not transport.is_open
    transport.scan_timeout = 0.5
    with pytest.raises(TransportError, match="not seen"):
        transport.open()
    fake.restore(MAC)
    transport.scan_timeout = 3.0
    transport.open()
    assert transport.is_open and fake.stats(MAC)["connects"] == 2
    # the vanish closed the acquired socket; the new link acquires a new one
    assert fake.stats(MAC)["acquires"] == 2 and fake.stats(MAC)["acquired"]


def test_a_removed_adapter_breaks_the_link_and_its_return_heals_it(fake, opened):
    transport, model = opened
    extract, _ = jbd_extract()
    fake.remove_adapter("hci0")
    with pytest.raises(TransportError):
        transport.drain()
        transport.send(read_request(REG_BASIC))
        transport.receive(extract, 2.0)
    transport.close()
    with pytest.raises(TransportError, match="cannot scan on hci0"):
        transport.open()
    fake.add_adapter("hci0")
    transport.open()
    transport.drain()
    transport.send(read_request(REG_BASIC))
    assert transport.receive(extract, 1.0) == expected_reply(model, read_request(REG_BASIC))


def test_writes_without_response_go_through_the_acquired_write_socket(fake, opened):
    transport, model = opened
    # bleak's BlueZ attributes AcquireWrite relies on are there: if a bleak upgrade removed them,
    # writes would silently fall back to a slower path (bench/ble.py)
    assert transport._write_fd is not None and fake.stats(MAC)["write_acquired"]
    extract, _ = jbd_extract()
    for register in (REG_BASIC, REG_CELLS):
        request = read_request(register)
        transport.drain()
        transport.send(request)
        assert transport.receive(extract, 1.0) == expected_reply(model, request)
    assert fake.stats(MAC)["writes"] == 2
    transport.close()  # closing the socket releases the acquisition in BlueZ
    deadline = time.monotonic() + 2.0
    while fake.stats(MAC)["write_acquired"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not fake.stats(MAC)["write_acquired"]


def test_a_write_on_a_socket_bluez_closed_breaks_the_link(fake, opened):
    transport, _ = opened
    fd = transport._write_fd
    assert fd is not None
    transport._on_disconnect = lambda _generation: None  # as if the signal were still on its way
    fake.vanish(MAC)
    deadline = time.monotonic() + 2.0
    while fake.stats(MAC)["present"] and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(TransportError, match="write socket closed by BlueZ"):
        transport.send(read_request(REG_BASIC))
    with pytest.raises(TransportError, match="write socket closed"):
        transport.send(read_request(REG_BASIC))  # until closed, every use says why


def test_writes_with_response_go_through_bleak(fake):
    model = BatteryModel(cells=4, soc=61.0)
    fake.add_device("hci0", MAC, "JBD-SP04S001", "jbd", model)
    transport = BleTransport(f"ble:hci0/{MAC}", dataclasses.replace(JBD_BLE, with_response=True))
    transport.open()
    try:
        assert transport._command is None
        extract, _ = jbd_extract()
        for register in (REG_BASIC, REG_CELLS):
            request = read_request(register)
            transport.drain()
            transport.send(request)
            assert transport.receive(extract, 1.0) == expected_reply(model, request)
        assert fake.stats(MAC)["writes"] == 2
        fake.vanish(MAC)
        with pytest.raises(TransportError):
            transport.drain()
            transport.send(read_request(REG_BASIC))
            transport.receive(extract, 2.0)
    finally:
        transport.close()


def test_a_device_left_connected_is_taken_without_a_scan(fake, opened):
    transport, model = opened
    # a previous process that died without disconnecting: BlueZ still holds the device
    # connected, and a connected device does not advertise (the fake stops its RSSI updates);
    # its acquired notification socket closed with it (the kernel closes a dead process's fds)
    client, transport._client = transport._client, None
    asyncio.run_coroutine_threadsafe(_drop_sockets(client), ble_loop()).result(2.0)
    assert fake.stats(MAC)["connected"]
    again = BleTransport(f"ble:hci0/{MAC}", JBD_BLE)
    again.scan_timeout = 0.2  # far too short to see an advertisement: none comes anyway
    again.open()
    try:
        extract, _ = jbd_extract()
        again.drain()
        again.send(read_request(REG_CELLS))
        assert again.receive(extract, 1.0) == expected_reply(model, read_request(REG_CELLS))
        assert fake.stats(MAC)["connects"] == 1  # BlueZ's connection, reused
    finally:
        again.close()


def test_a_ble_scan_sees_the_fake_devices_with_their_family(fake):
    # the fake's advertisements carry what `bmsbank scan --ble` reads: name, address, RSSI and
    # the service, so a JBD device is recognised by its name and by its service alone
    from bmsbank.services.poller import ble_scan

    fake.add_device("hci0", MAC, "SP04S034L4S200A", "jbd")
    fake.add_device("hci0", "AA:BB:CC:DD:EE:02", "1kWh 24V 30A", "jbd")  # renamed by its user
    fake.add_adapter("hci1")
    fake.add_device("hci1", "AA:BB:CC:DD:EE:03", "JBD-elsewhere", "jbd")  # heard by hci1 only
    seen = {s.address: s for s in ble_scan.discover("hci0", 1.0)}
    assert set(seen) == {MAC, "AA:BB:CC:DD:EE:02"}
    assert seen[MAC].name == "SP04S034L4S200A" and seen[MAC].family == "jbd"
    assert seen["AA:BB:CC:DD:EE:02"].family == "jbd"  # by the FF00 service it advertises
    assert -70 < seen[MAC].rssi < -50


def test_a_socket_closed_by_bluez_breaks_the_link_and_a_reconnect_heals_it(fake, opened):
    transport, model = opened
    extract, _ = jbd_extract()
    request = read_request(REG_BASIC)
    fake.hang_up(MAC)  # BlueZ closes it, the device stays connected: nothing would arrive
    assert fake.stats(MAC)["connected"] and not fake.stats(MAC)["acquired"]
    transport.drain()
    transport.send(request)
    with pytest.raises(TransportError, match="notification socket closed"):
        transport.receive(extract, 0.5)
    transport.close()
    transport.open()
    assert transport.acquire  # a closed socket is no reason to give AcquireNotify up
    transport.drain()
    transport.send(request)
    assert transport.receive(extract, 1.0) == expected_reply(model, request)
    assert fake.stats(MAC)["acquires"] == 2


def test_a_refused_acquire_falls_back_to_start_notify_for_good(fake, caplog):
    model = BatteryModel(cells=4, soc=37.0)
    fake.add_device("hci0", MAC, "JBD-SP04S001", "jbd", model)
    fake.refuse_acquire(MAC)
    transport = BleTransport(f"ble:hci0/{MAC}", JBD_BLE)
    extract, _ = jbd_extract()
    request = read_request(REG_BASIC)
    try:
        for _ in range(2):  # the second connect does not try AcquireNotify again
            transport.open()
            stats = fake.stats(MAC)
            assert stats["notifying"] and not stats["acquired"] and stats["acquires"] == 0
            transport.drain()
            transport.send(request)
            assert transport.receive(extract, 1.0) == expected_reply(model, request)
            transport.close()
    finally:
        transport.close()
    assert not transport.acquire and not transport.acquire_write
    warned = [r.getMessage() for r in caplog.records if "AcquireNotify" in r.getMessage()]
    assert len(warned) == 1 and "Not Supported" in warned[0] and "StartNotify" in warned[0]
    # the writes went through WriteValue, asking for no reply
    warned = [r.getMessage() for r in caplog.records if "AcquireWrite" in r.getMessage()]
    assert len(warned) == 1 and "WriteValue" in warned[0]
    assert fake.stats(MAC)["writes"] == 2 and not fake.stats(MAC)["write_acquired"]


def test_an_acquire_that_never_answers_falls_back_at_the_next_connect(fake, monkeypatch):
    import bleak

    model = BatteryModel(cells=4, soc=29.0)
    fake.add_device("hci0", MAC, "JBD-SP04S001", "jbd", model)
    start_notify = bleak.BleakClient.start_notify

    async def hanging(self, char, callback, **kwargs):
        if kwargs.get("bluez", {}).get("use_start_notify") is False:
            await asyncio.Event().wait()  # BlueZ never answers AcquireNotify
        await start_notify(self, char, callback, **kwargs)

    monkeypatch.setattr(bleak.BleakClient, "start_notify", hanging)
    transport = BleTransport(f"ble:hci0/{MAC}", JBD_BLE)
    transport.connect_timeout = 1.5
    extract, _ = jbd_extract()
    request = read_request(REG_BASIC)
    try:
        with pytest.raises(TransportError, match="no answer within 1.5 s"):
            transport.open()
        assert not transport.acquire
        deadline = time.monotonic() + 5.0  # the abandoned connect disconnects in the background
        while fake.stats(MAC)["connected"] and time.monotonic() < deadline:
            time.sleep(0.05)
        transport.open()
        assert fake.stats(MAC)["notifying"] and fake.stats(MAC)["acquires"] == 0
        transport.drain()
        transport.send(request)
        assert transport.receive(extract, 1.0) == expected_reply(model, request)
    finally:
        transport.close()
