"""SerialTransport on a real pseudo-terminal: the TX echo of RS485 adapters, multi-frame replies."""

from __future__ import annotations

import os
import threading
import time
import tty

import pytest

from bmsbank.errors import LinkTimeout
from bmsbank.services.poller.transport import SerialTransport

REQUEST = bytes.fromhex("0104100000127516")
REPLY = b"<reply>"


def take(marker: bytes):
    """An extractor that returns ``marker`` once it is at the head of the buffer."""

    def extract(buf: bytearray) -> bytes | None:
        if buf.startswith(marker):
            del buf[: len(marker)]
            return marker
        if buf and not marker.startswith(bytes(buf[: len(marker)])):
            del buf[:1]  # noise
        return None

    return extract


@pytest.fixture
def line():
    """(transport on the pty's slave side, function writing from the far end)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    transports = []

    def make(echo):
        t = SerialTransport(os.ttyname(slave), 9600, echo)
        t.open()
        transports.append(t)
        return t

    def answer(*chunks: bytes, gap: float = 0.0) -> None:
        def run() -> None:
            for chunk in chunks:
                time.sleep(gap)
                os.write(master, chunk)

        threading.Thread(target=run, daemon=True).start()

    yield make, answer
    for t in transports:
        t.close()
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("echo", ["auto", True])
def test_an_echo_is_dropped_even_when_it_arrives_in_pieces(line, echo):
    make, answer = line
    t = make(echo)
    t.send(REQUEST)
    answer(REQUEST[:3], REQUEST[3:], REPLY, gap=0.02)
    assert t.receive(take(REPLY), 1.0) == REPLY and t.echoes == 1


def test_auto_passes_a_reply_without_echo_that_starts_like_the_request(line):
    make, answer = line
    t = make("auto")
    t.send(REQUEST)
    reply = REQUEST[:2] + b"\x04" + REPLY  # same address and function, then the reply goes on
    answer(reply)
    assert t.receive(take(reply), 1.0) == reply and t.echoes == 0


def test_auto_hands_over_a_reply_identical_to_its_request_at_the_deadline(line):
    make, answer = line
    t = make("auto")
    t.send(REQUEST)
    answer(REQUEST)  # a Modbus FC06 acknowledgement repeats its request
    assert t.receive(take(REQUEST), 0.3) == REQUEST and t.echoes == 0


def test_true_drops_a_garbled_echo(line):
    make, answer = line
    t = make(True)
    t.send(REQUEST)
    answer(b"\xff" + REQUEST[1:] + REPLY)
    assert t.receive(take(REPLY), 1.0) == REPLY and t.echoes == 1


def test_false_keeps_everything(line):
    make, answer = line
    kept = make(False)
    kept.send(REQUEST)
    answer(REQUEST + REPLY)
    assert kept.receive(take(REQUEST), 1.0) == REQUEST and kept.echoes == 0


def test_the_next_frame_of_a_reply_waits_in_the_buffer_until_drained(line):
    make, answer = line
    t = make("auto")
    t.send(REQUEST)
    answer(b"<one><two><three>")
    assert t.receive(take(b"<one>"), 1.0) == b"<one>"
    assert t.receive(take(b"<two>"), 1.0) == b"<two>"
    assert t.drain() == len(b"<three>")
    with pytest.raises(LinkTimeout, match="timeout"):
        t.receive(take(b"<three>"), 0.1)


@pytest.mark.parametrize("parity", ["N", "E", "O"])
def test_the_port_is_opened_with_the_family_parity(parity):
    """ECS speaks 8E1: the port is configured with the parity the family declares.

    (A Linux pty drops PARENB from its termios, so the setting is read back from pyserial.)
    """
    master, slave = os.openpty()
    t = SerialTransport(os.ttyname(slave), 19200, "auto", parity)
    try:
        t.open()
        assert t.port is not None and t.port.parity == parity
    finally:
        t.close()
        os.close(master)
        os.close(slave)
