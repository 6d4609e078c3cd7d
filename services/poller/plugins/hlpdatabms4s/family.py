"""HLPdata BMS4S on its text terminal (TTL UART, 9600 8N1): ASCII commands, text-line replies.

The host writes a two-letter command and a newline; the BMS answers with text lines. No address
(one BMS per port) and no check value: a reply is accepted only when its structure holds (field
count, numbers where numbers belong, plausible ranges), so a line that noise corrupted is counted
as malformed and skipped. Facts and their public sources ("SB" = mr-manuel/venus-os_dbus-
serialbattery dbus-serialbattery/bms/hlpdatabms4s.py, class ``HLPdataBMS4S``, the version updated
by peterohman; "SB0" = its predecessor Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/
hlpdatabms4s.py; "UM" = HLP Data "BMS4S user manual 1.4", software 1.4.55, at
manuals.online/hlp-data/microcontroller/bms4s/user-manual/11io5):

- ``pv`` + newline (version) is answered with text holding ``BMS4S`` and the version, which SB
  keeps from ``BMS4S`` to the end of the line (``read_test_data``; it first writes a bare
  newline, 0.2 s before). Used here as the identification request.
- ``m1`` + newline is answered with one comma-separated line after the echo of the command (SB
  ``read_status_data`` looks for ``m1`` in the reply and takes the text after it):
  ``v1,v2,v3,v4,current,soc,chargeoff,loadoff,vbat2,socnow,adj,beep,led,temp...`` (SB's
  comment); cells in V with a decimal point (SB requires one in fields 1 and 4), current in A,
  SoC in %, field 12 ``beep`` an integer, and from field 14 on ``name value`` pairs, the
  battery probes named ``b...``. SB needs at least 13 fields.
- ``beep`` codes: 2 low temperature for charging, 3 high temperature for charging (warnings),
  4 low voltage, 5 high voltage (alarms): SB's levels.
- current sign: + = charge. SB takes the value as it is (+ = charge in its Battery class); UM's
  extreme-point log (command ``pe``) lists high-voltage events with +77.130 A and low-voltage
  events with -1.663 A, which only a + = charge reading makes sense of.
- reply time: SB waits 0.3 s after ``m1`` and ``pv`` before reading (2 s for ``ps``).

Where they disagree, and what is assumed:

- fields 7 and 8 are named ``chargeoff``/``loadoff`` in SB's comment, yet SB reads ``1`` as the
  FET on (``charge_fet = int(par[6]) == 1``); SB0 took the raw text. SB's decoding is used (its
  author ran it on a BMS4S); ``fet_flags_off`` reads them as the names say.
- temperatures: SB keeps only the digits of a probe's value (dropping a minus sign) and reports
  the highest and lowest probe; here every ``b`` probe is reported in order, with its sign.
- the echo: SB finds ``m1`` before the values; whether it ends its own line is not published.
  The framer drops an echo line (``m1``, ``pv``, ``ps``) and blank lines; an echo on the values'
  line is stripped from the first field.
- capacity: SB reads ``BatterySize=`` from the ``ps`` settings printout (700 bytes of text over
  many lines, no end marker); this family takes it from the ``capacity`` option instead, and
  remaining = capacity x SoC. The status line has no cycle count (reported as 0), no serial
  number, no balancing. No writes: SB has none (its charge/discharge "control" is local).

No capture of an ``m1`` reply is public: the tests' lines are built from SB's field list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import TextLine
from bmsbank.schema import ALARM, WARNING
from bmsbank.services.poller.plugins.base import Plugin, Query, require
from bmsbank.services.poller.plugins.hlpdatabms4s import INFO

VERSION, STATUS = b"pv\n", b"m1\n"
ECHOES = (b"m1", b"pv", b"ps")  #: command echoes the BMS sends before its reply
CELLS = 4
MIN_FIELDS = 13  #: v1..v4, current, soc, chargeoff, loadoff, vbat2, socnow, adj, beep, led
MAX_LINE = 256  #: characters of a status or version line, terminator included
MARK = "BMS4S"  #: what a version reply holds

FRAMING = TextLine(end=b"\n", skip=ECHOES, max_length=MAX_LINE)
#: the commands as the BMS reads them: text lines
REQUEST_FRAMING = TextLine(end=b"\n", max_length=64)

#: beep code -> (alarm, level)
BEEPS: dict[int, tuple[str, int]] = {
    2: ("low_charge_temperature", WARNING),
    3: ("high_charge_temperature", WARNING),
    4: ("low_voltage", ALARM),
    5: ("high_voltage", ALARM),
}

_VOLTS = re.compile(r"\d{1,2}\.\d{1,4}")  # a cell voltage: with its decimal point
_NUMBER = re.compile(r"-?\d{1,6}(\.\d{1,4})?")
_INTEGER = re.compile(r"\d{1,6}")
_FLAG = re.compile("[01]")
_PROBE = re.compile(r"([A-Za-z]\w{0,15}) (-?\d{1,3}(?:\.\d{1,2})?)[A-Za-z]{0,2}")
CELL_RANGE = (0.0, 5.0)  # V
CURRENT_LIMIT = 2000.0  # A either way
TEMPERATURE_RANGE = (-60.0, 150.0)  # °C


def _field(text: str, pattern: re.Pattern[str], what: str, line: bytes) -> str:
    if not pattern.fullmatch(text):
        raise FrameError(f"hlpdatabms4s: {what} reads {text!r}", line)
    return text


def parse_status(line: bytes) -> dict[str, Any]:
    """The values of one ``m1`` line (without its terminator), checked field by field.

    Raises:
        FrameError("malformed"): too few fields, a value that is not a number of its kind, or
            outside its plausible range.

    """
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:  # the framer passes text only; a caller may not
        raise FrameError("hlpdatabms4s: not text", line) from None
    if text.startswith("m1"):
        text = text[2:].lstrip()  # the echo on the values' line
    fields = [f.strip() for f in text.split(",")]
    if len(fields) < MIN_FIELDS:
        raise FrameError(f"hlpdatabms4s: {len(fields)} fields, at least {MIN_FIELDS}", line)
    cells = [float(_field(f, _VOLTS, f"cell {i + 1}", line)) for i, f in enumerate(fields[:4])]
    current = float(_field(fields[4], _NUMBER, "current", line))
    soc = int(_field(fields[5], _INTEGER, "SoC", line))
    flags = [int(_field(f, _FLAG, "a FET flag", line)) for f in fields[6:8]]
    for i in (8, 9, 10, 12):
        _field(fields[i], _NUMBER, f"field {i + 1}", line)
    beep = int(_field(fields[11], _INTEGER, "beep", line))
    probes: list[float] = []
    for entry in fields[13:]:
        if not entry:
            continue  # a trailing comma
        found = _PROBE.fullmatch(entry)
        if found is None:
            raise FrameError(f"hlpdatabms4s: temperature entry {entry!r}", line)
        if found.group(1).startswith("b"):
            probes.append(float(found.group(2)))
    low, high = TEMPERATURE_RANGE
    plausible = (all(CELL_RANGE[0] < v <= CELL_RANGE[1] for v in cells) and soc <= 100
                 and abs(current) <= CURRENT_LIMIT
                 and all(low <= t <= high for t in probes))  # fmt: skip
    if not plausible:
        raise FrameError(f"hlpdatabms4s: implausible {cells} V, {current} A, {soc} %, "
                         f"{probes} °C", line)  # fmt: skip
    return {"cells": cells, "current": current, "soc": soc, "charge_flag": flags[0],
            "load_flag": flags[1], "beep": beep, "temperatures": probes}  # fmt: skip


class Family(Plugin):
    """HLPdata BMS4S: ``pv`` once (identification), ``m1`` every cycle; lines checked by shape."""

    info = INFO
    command_gap: ClassVar[float] = 0.05  # no source gives one; a margin between commands
    #: SB reads 0.3 s after writing; a 100-character line takes 0.1 s at 9600 baud
    reply_timeout: ClassVar[float] = 0.6
    framing = FRAMING

    def queries(self, address: int) -> Sequence[Query]:
        """The version (once: it identifies the BMS), then the status line."""
        return (Query("version", VERSION, every=0), Query("status", STATUS))

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """Which reply a line is, from its text: the version holds ``BMS4S``; else status.

        Raises:
            FrameError("unexpected"): a version line asked for the status, or the reverse.

        """
        part = "version" if MARK.encode() in payload else "status"
        asked = {VERSION: "version", STATUS: "status"}.get(request or b"")
        if asked is not None and asked != part:
            raise FrameError(f"{self.name}: a {part} line to {request!r}", payload,
                             kind="unexpected")  # fmt: skip
        return part, 0

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Decode the line of ``part`` (the framer hands whole lines; the layouts are empty).

        Raises:
            FrameError("malformed"): see :func:`parse_status`.

        """
        line = payload.rstrip(b"\r\n")
        if part == "version":
            text = line.decode("ascii", "replace")
            return {"hardware": text[text.index(MARK) :].strip()}
        return parse_status(line)

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the status line (and the version) to state fields.

        Raises:
            FrameError: the status line is missing ("truncated").

        """
        require(parts, "status")
        f = parts["status"]
        on = 0 if self.options["fet_flags_off"] else 1
        capacity = self.options["capacity"]
        alarms = {name: 0 for name, _ in BEEPS.values()}
        if f["beep"] in BEEPS:
            name, level = BEEPS[f["beep"]]
            alarms[name] = level
        return {
            "voltage": sum(f["cells"]),
            "current": f["current"],
            "soc": float(f["soc"]),
            "capacity": capacity,
            "remaining": capacity * f["soc"] / 100.0,
            "cycles": 0,  # not reported
            "cells": list(f["cells"]),
            "balancing": [0] * CELLS,  # not reported
            "temperatures": list(f["temperatures"]),
            "charge_fet": f["charge_flag"] == on,
            "discharge_fet": f["load_flag"] == on,
            "alarms": alarms,
            "hardware": parts.get("version", {}).get("hardware", "HLPdata BMS4S"),
            "serial": "",
        }
