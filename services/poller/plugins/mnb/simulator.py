"""A simulated MNB board: a MAX17853's registers filled from a battery model, answered over SPI.

The test and demo stand-in for the chip behind ``spidev.SpiDev``: :meth:`Simulator.transfer` is
one full-duplex SPI transaction (bytes in, as many bytes out), and
:class:`bmsbank.services.poller.spi_transport.SpiSocketServer` serves it on a Unix socket that a
poller in another process opens as ``device = "spisim:/path/to/socket"``. :meth:`Simulator.feed`
is the same for the byte-level test links (no reply bytes where the chip would not answer).

What it models: requests with a wrong CRC are ignored (the MISO line idles high: 0xFF bytes,
which no read reply's CRC-3 accepts); writes are stored; a write of SCANCTRL with its SCAN bit
runs a measurement at once, filling the result registers from the model (cells on inputs 2..n+1,
the current-sense amplifier's output on input 1, thermistors on AUX0-5, the die temperature,
the alert registers from the model's active alarms) and setting DATARDY; a read returns the
register. The ADC codes are the family's own formulas run backwards, so only the protocol-built
frames in tests/test_mnb.py tie both to the real chip.
"""

from __future__ import annotations

import math
from typing import Any

from bmsbank.services.poller.plugins.mnb.family import (
    AUX0,
    AUX_INPUTS,
    CELL_STEP,
    CURRENT_INPUT,
    DATA_READY,
    DIAG1,
    FIRST_CELL,
    FMEA1,
    FMEA1_ALARMS,
    FULL_SCALE,
    ID1,
    ID2,
    PTAT_FULL_SCALE,
    PTAT_OFFSET,
    PTAT_SLOPE,
    READ,
    SCAN_DONE,
    SCANCTRL,
    SENSE_MIDPOINT,
    STATUS1,
    STATUS1_ALARMS,
    STATUS2,
    STATUS2_ALARMS,
    THERMISTOR_OFFSET,
    THERMISTOR_SLOPE,
    VERSION,
    WORD,
    Family,
    parse_request,
    read_reply,
    write_reply,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

IDLE = 0xFF  # what MISO reads while the chip does not drive it
CHIP_VERSION = 0x8532  # MAX17853, silicon revision 2 (a made-up revision)
SCAN_BIT = 0x0001  # SCANCTRL bit 0: start a measurement


def steps(volts: float) -> int:
    """The 14-bit ADC code of ``volts`` on a cell input, held to the ADC's range."""
    return min(FULL_SCALE, max(0, round(volts / CELL_STEP)))


def thermistor_steps(celsius: float) -> int:
    """The ratiometric code a thermistor at ``celsius`` gives (the family's formula inverted)."""
    code = FULL_SCALE / math.exp(THERMISTOR_SLOPE * (celsius + THERMISTOR_OFFSET)) - 1
    return min(FULL_SCALE - 1, max(0, round(code)))


class Simulator:
    """One MNB board (the key of ``packs`` is nominal: one chip per SPI device)."""

    family = Family

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False,
                 options: dict[str, Any] | None = None) -> None:  # fmt: skip
        if len(packs) != 1:
            raise ValueError(f"an MNB SPI device carries exactly one chip, got {len(packs)}")
        self.packs = packs
        self.echo = echo  # an SPI bus has no echo: kept for the simulators' common signature
        self.options = Family.info.option_values(options or {})
        self.registers: dict[int, int] = {VERSION: CHIP_VERSION, ID1: 0x4D4E,
                                          ID2: 0x4200 + next(iter(packs))}  # fmt: skip
        self.transfers = 0  #: SPI transactions answered
        self.corrupt = 0  #: the next n read replies go out with a wrong CRC-3 (a fault for tests)

    @property
    def model(self) -> BatteryModel:
        """The pack behind this board."""
        return next(iter(self.packs.values()))

    @property
    def baudrate(self) -> int:
        """The SPI clock the family asks for [Hz]."""
        return Family.baudrate

    def transfer(self, data: bytes) -> bytes:
        """One full-duplex transaction: a reply word per request word, idle bytes elsewhere."""
        out = bytearray()
        for at in range(0, len(data), WORD):
            chunk = data[at : at + WORD]
            out += self.answer(chunk) or bytes([IDLE]) * len(chunk)
        return bytes(out)

    def feed(self, data: bytes) -> list[bytes]:
        """The replies to the words in ``data`` (a byte-level link: nothing where none comes)."""
        replies = [self.answer(data[at : at + WORD]) for at in range(0, len(data), WORD)]
        return [r for r in replies if r]

    def answer(self, request: bytes) -> bytes:
        """The chip's reply word to one request word (b"" for a malformed request)."""
        asked = parse_request(request)
        if asked is None:
            return b""
        self.transfers += 1
        rw, register, data = asked
        if rw == READ:
            reply = read_reply(self.registers.get(register, 0))
            if self.corrupt > 0:
                self.corrupt -= 1
                reply = reply[:-1] + bytes([reply[-1] ^ 0x01])
            return reply
        if STATUS1 <= register <= 0x06:  # writing 0 clears the alerts (the next scan sets them)
            self.registers[register] = self.registers.get(register, 0) & data
        else:
            self.registers[register] = data
        if register == SCANCTRL and data & SCAN_BIT:
            self.measure()
        elif register == SCANCTRL:
            self.registers[register] = data | DATA_READY | SCAN_DONE  # results stay readable
        return write_reply(register, data)

    def alerts(self) -> dict[int, int]:
        """STATUS1, STATUS2 and FMEA1 as the chip would set them for the model's alarms."""
        m = self.model
        return {STATUS1: base.alarm_bits(m, STATUS1_ALARMS),
                STATUS2: base.alarm_bits(m, STATUS2_ALARMS),
                FMEA1: base.alarm_bits(m, FMEA1_ALARMS)}  # fmt: skip

    def measure(self) -> None:
        """A scan: every result register from the model, then DATARDY."""
        m, regs = self.model, self.registers
        gain, offset = self.options["current_gain"], self.options["current_offset"]
        sense = (m.effective_current - offset) * gain + SENSE_MIDPOINT
        regs[CURRENT_INPUT] = steps(sense) << 2
        for i, volts in enumerate(m.cell_voltages[:13]):
            regs[FIRST_CELL + i] = steps(volts) << 2
        probes = list(m.temperatures[:AUX_INPUTS])
        for i in range(AUX_INPUTS):
            code = thermistor_steps(probes[i]) if i < len(probes) else FULL_SCALE
            regs[AUX0 + i] = code << 2
        ptat = (m.mosfet_temperature - PTAT_OFFSET) * PTAT_SLOPE  # V
        regs[DIAG1] = min(FULL_SCALE, round(ptat / PTAT_FULL_SCALE * (FULL_SCALE + 1))) << 2
        for register, bits in self.alerts().items():
            regs[register] = regs.get(register, 0) | bits
        regs[SCANCTRL] = regs[SCANCTRL] | DATA_READY | SCAN_DONE
