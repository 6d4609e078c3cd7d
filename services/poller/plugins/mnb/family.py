"""MNB BMS: a Maxim MAX17853 cell monitor read over a Raspberry Pi's SPI bus.

The MNB is not a BMS with a protocol of its own: the host drives the monitor chip register by
register, measures, and decides everything itself (SoC, FET outputs, balancing). Facts and their
public sources: "DRV" = Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/mnb.py (``MNB``,
``get_settings``) with its helper, versager/venus-os_dbus-serialbattery
etc/dbus-serialbattery/bms/mnb_utils_max17853.py (``init_spi``, ``CrcA_MAX17``,
``spi_xfer_MAX17``, ``init_max``, ``data_cycle``, ``CSA``, ``calc_Ah``, ``gpio_decode``,
``die_temp``, ``stat_scan``, ``err_dec``, ``v_cell_d``); Louisvdw's own copy of the helper
(mnb_test_max17853.py) is the same code with the SPI calls stubbed out. "MAP" = the MAX1785x
register map in analogdevicesinc/MAXREFDES1301 Firmware/MAXREFDES1301/Max1785x.h and foxBMS's
mxm_register_map.h / mxm_1785x_tools.h (``MXM_REG_*``, ``MXM_MODEL_ID_MAX17853 = 0x853``).

The wire (DRV ``spi_xfer_MAX17``): /dev/spidev0.0, 500 kHz, SPI mode 0, one 32-bit word per
transaction, most significant bit first, full duplex (the reply is what the chip shifts out
while the request goes in)::

    request  RW(1) ADDRESS(8) CRC3(RW,ADDRESS)(3) DATA(16) RW(1) CRC3(DATA)(3)
    reply    FLAGS(5) CRC(3) -(4) DATA(16) OK(1) CRC3(DATA)(3)      (to a read, RW = 1)
    reply    FLAGS(5) CRC(3) ADDRESS(8) DATA(16)                    (to a write, RW = 0)

CRC3 is the polynomial x^3 + x + 1 over the bits, MSB first, seed 0 (DRV ``CrcA_MAX17``). DRV
computes the CRC-3 of a read reply (``rcrc``) and the chip's OK bit (``rxok``) but checks neither;
bmsbank checks the CRC-3 of the data (a wrong one is counted under ``checksum``; the port option
``check_crc = false`` accepts it, for a board where this reading of the reply is wrong). Write
replies carry nothing to check (DRV reads only their flags). Because a reply says neither which
register it answers nor even whether it answers a read, every reply is decoded with its request,
as Modbus replies are (``bmsbank decode mnb REQUEST=REPLY``). A word has no header and no
byte-aligned check, which no framer of the toolkit describes: :meth:`Family.extract` takes the
4-byte words themselves (an SPI transfer returns exactly as many bytes as it sent, so there is
never noise to skip) and :meth:`Family.parse` checks and decodes them.

What the MNB board wires where (DRV ``data_cycle`` and ``init_max``, register names from MAP):

- the cells sit on the chip's inputs 2..n+1 (CELL2 = 0x48 ...; PACKCFG top cell = n + 1), read
  as the 14-bit value (register >> 2) times 0.305 mV (the exact step is 5 V / 16384 = 0.30518 mV;
  DRV's 0.305 is kept, its thresholds use it too). Input 1 (CELL1 = 0x47; the MAX17853 has no
  current-sense register of its own, MAP's CSA 0x46 is "MAX17852 only") carries the output of
  the board's current-sense amplifier: I = (value x 0.305 mV - 2.5 V) / 0.025 V/A + 2.2 A, + =
  charge (DRV ``CSA``, whose coulomb counter adds it to the charge). Gain and offset are board
  calibration: the ``current_gain`` and ``current_offset`` options (the stubbed copy of the helper
  has an offset of 0.6 A, the real one 2.2 A: 2.2 is the default).
- six thermistors on AUX0..AUX5 (0x59..0x5E), ratiometric: T = ln(16383 / (value + 1)) / 0.01998
  - 12.74 °C (DRV ``gpio_decode``; its threshold encoder ``xtemp`` uses 0.01988, a slip: reading
  uses 0.01998). An input without a thermistor reads full scale (0x3FFF, the pull-up alone; an
  assumption, no capture shows one) and is left out. DRV averages them in pairs; every fitted one
  is reported here.
- the die temperature (DIAG1 0x57 after DIAGCFG = 1): Tj = value / 16384 x 2.3077 V / 3.2 mV/K +
  8.3 - 273 °C (DRV ``die_temp``); reported as the board's own temperature (``mosfet_temperature``,
  the field other families give their MOSFETs), as DRV reports it as a fourth temperature.
- the pack voltage is the sum of the cells (DRV; its VBLOCK read includes the current-sense input).
- alarms: STATUS1, STATUS2 and FMEA1 (0x02, 0x03, 0x05), read each cycle and then cleared by
  writing 0 to 0x02..0x06 (DRV ``stat_scan``, bits as DRV ``err_dec`` and MAP name them).
- identity: VERSION (0x00) bits 15-4 are the model, 0x853 (MAP); DRV never reads it, bmsbank reads
  it first every cycle (the identification a scan would use) and rejects another model. ID1/ID2
  (0x8C/0x8D, MAP's ROM id) are read once for the ``serial`` field.

The poll cycle is DRV's: the chip is configured once (DRV ``init_max``: thresholds from DRV's
``get_settings``, 2.55-3.65 V per cell and 15-40 °C, scaled from the cell count), then each cycle
starts a scan (SCANCTRL 0x66 = 0x0E21), reads SCANCTRL until DATARDY (bit 13; a scan not ready
yet is counted as ``truncated`` and the read retried after the command gap, where DRV loops),
reads DIAG1, writes BALDATA 0x83 = 1 and SCANCTRL = 0x1E28, reads the cells, switches balancing
off (BALCTRL 0x80 = 0, BALSWCTRL 0x6F = 0, as DRV does whenever it is not balancing), reads the
current input, the thermistors and the status, and clears the status. These writes are part of
reading this chip; they are never the identification request.

Done in software, as DRV does (hooks of this family):

- SoC: coulomb counting (:meth:`Family.count_charge`). The count starts at half the capacity
  (DRV ``init_spi``: Q_Batt = 0.5 x capacity), integrates the current, is held within 0..capacity,
  and is set to full when the highest cell passes 3.60 V (3.65 - 0.05) and to empty when the
  lowest falls under 2.60 V (DRV ``v_cell_d``, ``calc_Ah``). So after a restart the SoC is 50 %
  until the pack reaches full or empty, exactly as with DRV. The capacity is the ``capacity``
  option (DRV: 36 x 3.6 Ah).
- FET states: the MNB has no FET register; DRV switches its charge and load outputs (GPIO 2 and 3)
  from the cell voltages with hysteresis: charge off above 3.60 V until under 3.50 V, load off
  under 2.60 V until above 2.70 V (``v_cell_d``, ``inpins``). bmsbank does not drive those pins:
  ``charge_fet`` / ``discharge_fet`` report what DRV would switch them to, so the bank stops
  charging or discharging the pack at the same points.

Left out: balancing (DRV's ``cell_balance`` sets cell timers from the cell spread; bmsbank keeps
the chip's balancing off, as DRV does when the spread is small: use DRV, or balance elsewhere, if
the pack needs it), the generator and fan outputs (GPIO 4 and 17), the energy counters, and DRV's
cycle count (kWh out / Ah x 0.00005, which stays near 0): the state has no cycle count. No controls:
DRV has none a user can ask for. The protocol has no address: one chip per SPI device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.schema import ALARM
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, Query, alarms_from_bits, require
from bmsbank.services.poller.plugins.mnb import INFO

WORD = 4  # bytes per SPI transaction
READ, WRITE = 1, 0

# registers (MAP)
VERSION, STATUS1, STATUS2, FMEA1 = 0x00, 0x02, 0x03, 0x05
CURRENT_INPUT = 0x47  # CELL1: the board's current-sense amplifier
FIRST_CELL = 0x48  # CELL2: the pack's cell 1
DIAG1, AUX0, AUX_INPUTS = 0x57, 0x59, 6
SCANCTRL, BALSWCTRL, BALCTRL, BALDATA = 0x66, 0x6F, 0x80, 0x83
ID1, ID2 = 0x8C, 0x8D

MODELS = (0x852, 0x853, 0x854)  # VERSION bits 15-4 of the MAX1785x parts (foxBMS MXM_MODEL_ID_*)
SCAN_START = 0x0E21  # DRV data_cycle: configure and start a scan
SCAN_READOUT = 0x1E28  # DRV data_cycle: written before the results are read
DATA_READY = 0x2000  # SCANCTRL bit 13
SCAN_DONE = 0x8000  # SCANCTRL bit 15
FULL_SCALE = 0x3FFF  # 14-bit ADC results sit in register bits 15-2

CELL_STEP = 0.000305  # V per step of a cell input (DRV)
BLOCK_STEP = 0.003967  # V per step of the block (pack) voltage threshold registers (DRV)
SENSE_MIDPOINT = 2.5  # V the current-sense amplifier outputs at 0 A (DRV CSA)
THERMISTOR_SLOPE, THERMISTOR_OFFSET = 0.01998, 12.74  # DRV gpio_decode
THRESHOLD_SLOPE = 0.01988  # DRV xtemp (encodes the temperature thresholds)
PTAT_FULL_SCALE, PTAT_SLOPE, PTAT_OFFSET = 2.3077, 0.0032, 8.3 - 273.0  # DRV die_temp

# DRV get_settings: the limits the chip's alerts, the SoC resync and the FET outputs use
CELL_MAX, CELL_MIN = 3.65, 2.55  # V
TEMPERATURE_MAX, TEMPERATURE_MIN = 40.0, 15.0  # °C
FULL_AT, EMPTY_AT = CELL_MAX - 0.05, CELL_MIN + 0.05  # V: SoC set to 100 / 0 %, FET off
CHARGE_AGAIN, LOAD_AGAIN = CELL_MAX - 0.15, CELL_MIN + 0.15  # V: FET back on
START_FRACTION = 0.5  # DRV init_spi: the count starts at half the capacity

#: STATUS1 bits (MAP names; DRV err_dec's meaning). The aux inputs see NTC voltages: over voltage
#: is cold (DRV: "Battery Under Temp", low_charge_temp), under voltage is hot.
STATUS1_ALARMS: dict[int, str] = {
    13: "cell_imbalance",  # ALRTMSMTCH
    12: "high_cell_voltage",  # ALRTCELLOVST
    11: "low_cell_voltage",  # ALRTCELLUVST
    10: "high_voltage",  # ALRTBLKOVST
    9: "low_voltage",  # ALRTBLKUVST
    8: "low_charge_temperature",  # ALRTAUXOVST
    7: "high_charge_temperature",  # ALRTAUXUVST
    3: "internal_failure",  # ALRTCAL
}
#: STATUS2 bits DRV reports: SPI clock, 16 MHz clock, SPI internal bus fault
STATUS2_ALARMS: dict[int, str] = {4: "internal_failure", 5: "internal_failure",
                                  6: "internal_failure"}  # fmt: skip
#: FMEA1 bits DRV reports: HV headroom, HV under voltage, ground faults
FMEA1_ALARMS: dict[int, str] = {2: "internal_failure", 3: "internal_failure", 4: "internal_failure",
                                5: "internal_failure", 6: "internal_failure"}  # fmt: skip
ALARM_NAMES = tuple(dict.fromkeys([*STATUS1_ALARMS.values(), *STATUS2_ALARMS.values(),
                                   *FMEA1_ALARMS.values()]))  # fmt: skip

#: register -> part name of a read (any other register reads as "register_XX")
READ_PARTS: dict[int, str] = {
    VERSION: "version", STATUS1: "status1", STATUS2: "status2", FMEA1: "fmea1",
    CURRENT_INPUT: "current", DIAG1: "diag1", SCANCTRL: "scanctrl", ID1: "id1", ID2: "id2",
    **{FIRST_CELL + i: f"cell{i + 1}" for i in range(13)},
    **{AUX0 + i: f"aux{i}" for i in range(AUX_INPUTS)},
}  # fmt: skip


def crc3(value: int, bits: int) -> int:
    """CRC-3 (x^3 + x + 1, seed 0, MSB first) of the lowest ``bits`` bits of ``value``."""
    rest = (value & ((1 << bits) - 1)) << 3
    for top in range(bits + 2, 2, -1):  # divide bit by bit, the highest first
        if rest >> top & 1:
            rest ^= 0b1011 << (top - 3)
    return rest


def word(rw: int, register: int, data: int = 0) -> bytes:
    """The 4-byte SPI request: read (``rw`` 1) or write (0) ``data`` to ``register``."""
    value = (rw << 31 | register << 23 | crc3(rw << 8 | register, 9) << 20 | data << 4 | rw << 3
             | crc3(data, 16))  # fmt: skip
    return value.to_bytes(WORD, "big")


def read(register: int) -> bytes:
    """The request that reads ``register``."""
    return word(READ, register)


def write(register: int, data: int) -> bytes:
    """The request that writes ``data`` to ``register``."""
    return word(WRITE, register, data)


def parse_request(request: bytes) -> tuple[int, int, int] | None:
    """(rw, register, data) of a well-formed request (both CRCs right), else None."""
    if len(request) != WORD:
        return None
    value = int.from_bytes(request, "big")
    rw, register, data = value >> 31, value >> 23 & 0xFF, value >> 4 & 0xFFFF
    if value >> 3 & 1 != rw or value >> 20 & 7 != crc3(rw << 8 | register, 9):
        return None
    if value & 7 != crc3(data, 16):
        return None
    return rw, register, data


def read_reply(data: int, flags: int = 0, ok: int = 1) -> bytes:
    """The chip's reply to a read of a register holding ``data`` (simulator and tests)."""
    value = flags << 27 | crc3(flags, 5) << 24 | data << 4 | ok << 3 | crc3(data, 16)
    return value.to_bytes(WORD, "big")


def write_reply(register: int, data: int, flags: int = 0) -> bytes:
    """The chip's reply to a write (the layout DRV reads: flags, address, data)."""
    return bytes((flags << 3 | crc3(flags, 5), register, data >> 8, data & 0xFF))


def adc(value: int) -> int:
    """The 14-bit measurement in a result register (bits 15-2)."""
    return value >> 2


def thermistor(value: int) -> float | None:
    """°C of a ratiometric thermistor input (DRV gpio_decode); None for an open input."""
    steps = adc(value)
    if steps >= FULL_SCALE:
        return None
    return math.log(FULL_SCALE / (steps + 1)) / THERMISTOR_SLOPE - THERMISTOR_OFFSET


def threshold_steps(celsius: float) -> int:
    """The ratiometric value an aux threshold register is set to for ``celsius`` (DRV xtemp)."""
    return int(FULL_SCALE / math.exp(THRESHOLD_SLOPE * (celsius + THERMISTOR_OFFSET)))


def setup_writes(cells: int) -> list[tuple[int, int]]:
    """(register, value) of DRV's ``init_max`` for ``cells`` cells, in its order.

    DRV writes the first aux threshold (0x31) without the 2-bit shift every other threshold has;
    it is shifted here like the others.
    """
    top = cells + 1  # the current-sense amplifier takes input 1
    enabled = sum(1 << i for i in range(1, top))
    pack_max, pack_min = CELL_MAX * cells, CELL_MIN * cells
    return [
        *((r, 0) for r in range(1, 7)),  # clear the power-on alerts
        (0x14, 0x02), (0x15, 0x04), (0x16, 0x00),  # ALERT on SPI, no SPI timeout, aux inputs
        (0x18, 0x2000 | top << 8 | top << 4 | top),  # PACKCFG: top cell
        (0x19, 0x3FAF),  # ALRTIRQEN
        (0x1A, 0x4000 | enabled), (0x1B, 0x4000 | enabled),  # over/under voltage alerts on
        (0x1C, 0xF), (0x1D, 0xF),  # aux over/under voltage alerts on
        (0x1F, int((CELL_MAX - 0.1) / CELL_STEP) << 2), (0x20, int(CELL_MAX / CELL_STEP) << 2),
        (0x21, int((CELL_MIN + 0.1) / CELL_STEP) << 2), (0x22, int(CELL_MIN / CELL_STEP) << 2),
        (0x23, 0x514),  # cell mismatch
        (0x28, int((pack_max - 0.25) / BLOCK_STEP) << 2), (0x29, int(pack_max / BLOCK_STEP) << 2),
        (0x2A, int((pack_min + 0.25) / BLOCK_STEP) << 2), (0x2B, int(pack_min / BLOCK_STEP) << 2),
        (0x30, threshold_steps(TEMPERATURE_MIN + 5) << 2),  # cold: NTC voltages run backwards
        (0x31, threshold_steps(TEMPERATURE_MIN) << 2),
        (0x32, threshold_steps(TEMPERATURE_MAX - 5) << 2),
        (0x33, threshold_steps(TEMPERATURE_MAX) << 2),
        (0x5F, 0x01), (0x62, 0x4800), (0x63, 0x303),  # polarity, acquisition, balance delay
        (0x64, 0x4000 | enabled | 1),  # MEASUREEN1: the block and inputs 1..top
        (0x65, 0x803F),  # filter init, aux measurements on
        (SCANCTRL, SCAN_START), (BALCTRL, 0), (BALSWCTRL, 0x1FE),
        (0x7E, 0x01), (0x6B, 1),  # balancing undervoltage threshold; DIAG1 = die temperature
    ]  # fmt: skip


def write_part(register: int, data: int) -> str:
    """The part name of a write: the register and value written."""
    return f"write_{register:02x}_{data:04x}"


class Family(Plugin):
    """MNB: a MAX17853 read register by register over SPI; SoC counted in software."""

    info = INFO
    #: DRV sleeps 10 ms after every transaction (spi_xfer_MAX17); a scan finishes within that
    command_gap: ClassVar[float] = 0.01
    #: an SPI reply is there when the transfer returns; this only bounds a stand-in's socket
    reply_timeout: ClassVar[float] = 0.2

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        # No toolkit framer: SPI words have no header (see the module docstring).
        self.options = self.info.option_values(options or {})
        self.tables = {}
        #: what the hooks remember between cycles (one chip per port)
        self.clock: Callable[[], float] = time.monotonic
        self.charge: float | None = None  #: Ah counted, None before the first cycle
        self.counted_at = 0.0  #: clock time of the last count [s]
        self.charge_allowed = True  #: DRV's charge output
        self.load_allowed = True  #: DRV's load (discharge) output

    def queries(self, address: int) -> Sequence[Query]:
        """Identify, configure once, scan, read, switch balancing off, read status and clear it."""
        cells = self.options["cells"]
        setup = [Query(write_part(r, v), write(r, v), every=0) for r, v in setup_writes(cells)]
        return (
            Query("version", read(VERSION)),
            *setup,
            Query("id1", read(ID1), every=0, required=False),
            Query("id2", read(ID2), every=0, required=False),
            Query(write_part(SCANCTRL, SCAN_START), write(SCANCTRL, SCAN_START)),
            Query("scanctrl", read(SCANCTRL)),
            Query("diag1", read(DIAG1), required=False),
            Query(write_part(BALDATA, 1), write(BALDATA, 1)),
            Query(write_part(SCANCTRL, SCAN_READOUT), write(SCANCTRL, SCAN_READOUT)),
            *(Query(f"cell{i + 1}", read(FIRST_CELL + i)) for i in range(cells)),
            Query(write_part(BALCTRL, 0), write(BALCTRL, 0)),
            Query(write_part(BALSWCTRL, 0), write(BALSWCTRL, 0)),
            Query("current", read(CURRENT_INPUT)),
            *(Query(f"aux{i}", read(AUX0 + i), required=False) for i in range(AUX_INPUTS)),
            Query("status1", read(STATUS1)),
            Query("status2", read(STATUS2)),
            Query("fmea1", read(FMEA1)),
            *(Query(write_part(r, 0), write(r, 0), required=False) for r in range(2, 7)),
        )

    # -- replies ------------------------------------------------------------------------------
    def extract(self, buf: bytearray, stats: LinkStats) -> bytes | None:
        """The next 4-byte word (an SPI transfer returns exactly what it clocked in)."""
        if len(buf) < WORD:
            return None
        frame = bytes(buf[:WORD])
        del buf[:WORD]
        return frame

    def parse(
        self, frame: bytes, request: bytes | None = None, address: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Decode the reply ``frame`` to ``request`` (a reply does not say what it answers).

        Raises:
            FrameError: no or a malformed request ("unexpected"), a frame that is not one word
                ("malformed"), a read reply whose CRC-3 is wrong ("checksum"), content the
                family rejects (see :meth:`refine`).

        """
        if len(frame) != WORD:
            raise FrameError(f"{self.name}: a reply is one {WORD}-byte word", frame)
        asked = parse_request(request) if request is not None else None
        if asked is None:
            said = "no request" if request is None else f"request {request.hex(' ')}"
            raise FrameError(f"{self.name}: a reply is decoded with the request it answers "
                             f"({said})", frame, kind="unexpected")  # fmt: skip
        rw, register, written = asked
        value = int.from_bytes(frame, "big")
        flags = value >> 27
        if rw == WRITE:
            return write_part(register, written), {"register": register, "flags": flags}
        data = value >> 4 & 0xFFFF
        if self.options["check_crc"] and value & 7 != crc3(data, 16):
            raise FrameError(f"{self.name}: CRC-3 of register 0x{register:02X}'s value is "
                             f"{value & 7}, not {crc3(data, 16)}", frame,
                             kind="checksum")  # fmt: skip
        part = READ_PARTS.get(register, f"register_{register:02x}")
        fields = {"register": register, "value": data, "flags": flags, "ok": value >> 3 & 1}
        return part, self.refine(part, fields, frame)

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Physical values from a register's value (what the board wires to each input).

        Raises:
            FrameError: another chip than a MAX1785x ("unexpected"), a scan not finished yet
                ("truncated": the poller reads again after the command gap).

        """
        value = fields["value"]
        if part == "version":
            fields["model"], fields["revision"] = value >> 4, value & 0xF
            if fields["model"] not in MODELS:
                raise FrameError(f"{self.name}: VERSION 0x{value:04X} is no MAX1785x", payload,
                                 kind="unexpected")  # fmt: skip
        elif part == "scanctrl":
            fields["data_ready"] = bool(value & DATA_READY)
            if not fields["data_ready"]:
                raise FrameError(f"{self.name}: scan not finished (SCANCTRL 0x{value:04X})",
                                 payload, kind="truncated")  # fmt: skip
        elif part.startswith("cell"):
            fields["voltage"] = adc(value) * CELL_STEP
        elif part == "current":
            sense = adc(value) * CELL_STEP
            fields["current"] = ((sense - SENSE_MIDPOINT) / self.options["current_gain"]
                                 + self.options["current_offset"])  # fmt: skip
        elif part.startswith("aux"):
            fields["temperature"] = thermistor(value)
        elif part == "diag1":
            fields["temperature"] = (adc(value) / (FULL_SCALE + 1) * PTAT_FULL_SCALE / PTAT_SLOPE
                                     + PTAT_OFFSET)  # fmt: skip
        return fields

    # -- state ----------------------------------------------------------------------------------
    def count_charge(self, current: float, cells: Sequence[float]) -> float:
        """DRV's coulomb counter: the Ah in the pack after this cycle (a hook with memory).

        Starts at half the capacity; set to full / empty at the cell limits, then the current
        since the last cycle is added, held within 0..capacity (DRV ``v_cell_d``, ``calc_Ah``).
        """
        capacity = self.options["capacity"]
        now = self.clock()
        if self.charge is None:
            self.charge, self.counted_at = START_FRACTION * capacity, now
        low, high = min(cells), max(cells)
        if 0 < low < EMPTY_AT:
            self.charge = 0.0
        if high > FULL_AT:
            self.charge = capacity
        hours = (now - self.counted_at) / 3600.0
        self.counted_at = now
        self.charge = min(capacity, max(0.0, self.charge + current * hours))
        return self.charge

    def outputs(self, cells: Sequence[float]) -> tuple[bool, bool]:
        """DRV's charge and load outputs for these cells (with its hysteresis)."""
        low, high = min(cells), max(cells)
        if 0 < low < EMPTY_AT:
            self.load_allowed = False
        elif low > LOAD_AGAIN:
            self.load_allowed = True
        if high > FULL_AT:
            self.charge_allowed = False
        elif high < CHARGE_AGAIN:
            self.charge_allowed = True
        return self.charge_allowed, self.load_allowed

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map one cycle's registers to state fields; counts the charge (call once per cycle).

        Raises:
            FrameError: a register the state needs is missing ("truncated").

        """
        count = self.options["cells"]
        cell_parts = [f"cell{i + 1}" for i in range(count)]
        require(parts, "version", "current", "status1", "status2", "fmea1", *cell_parts)
        cells = [parts[p]["voltage"] for p in cell_parts]
        current = parts["current"]["current"]
        charge = self.count_charge(current, cells)
        charge_on, load_on = self.outputs(cells)
        capacity = self.options["capacity"]
        alarms = dict.fromkeys(ALARM_NAMES, 0)
        for part, table in (("status1", STATUS1_ALARMS), ("status2", STATUS2_ALARMS),
                            ("fmea1", FMEA1_ALARMS)):  # fmt: skip
            for name, level in alarms_from_bits(parts[part]["value"], table, ALARM).items():
                alarms[name] = max(alarms[name], level)
        temperatures = [parts[f"aux{i}"]["temperature"] for i in range(AUX_INPUTS)
                        if f"aux{i}" in parts]  # fmt: skip
        version = parts["version"]
        ids = [parts[p]["value"] for p in ("id1", "id2") if p in parts]
        fields: dict[str, Any] = {
            "voltage": sum(cells),
            "current": current,
            "soc": 100.0 * charge / capacity,
            "capacity": capacity,
            "remaining": charge,
            "cells": cells,
            "balancing": [0] * count,  # bmsbank keeps the chip's balancing off
            "temperatures": [t for t in temperatures if t is not None],
            "charge_fet": charge_on,
            "discharge_fet": load_on,
            "alarms": alarms,
            "hardware": f"MNB (MAX17{version['model']:X} rev {version['revision']}) {count}S",
            "serial": "".join(f"{v:04X}" for v in ids) if len(ids) == 2 and any(ids) else "",
        }
        if "diag1" in parts:
            fields["mosfet_temperature"] = parts["diag1"]["temperature"]
        return fields
