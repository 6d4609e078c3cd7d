"""Read the small JSON files the services keep across restarts, trusting nothing in them.

The arbiter's state file, the publisher's energy file and its names file are written by the
services themselves, but a full disk, a power cut, an editor or a bad restore can leave anything
there. :func:`read_json` turns every way such a file can be wrong (a directory, unreadable, too
large, not UTF-8, not JSON, nested past reason, ``NaN``/``Infinity``) into one
:class:`CorruptFile` whose message is one line; :func:`number` checks one field. The callers log
that line once and carry on as if there were no file: a bad file must never stop a service.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

MAX_BYTES = 64 * 1024  #: larger than any file the services write; a larger one is not theirs


class CorruptFile(ValueError):
    """A kept file that cannot be used; the message says why, in one line."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a service writes")


def read_json(path: str, max_bytes: int = MAX_BYTES) -> dict[str, Any] | None:
    """The JSON object in the file at ``path``, or None when there is no such file (or path "").

    Raises:
        CorruptFile: the path is not a regular file, cannot be read, is larger than
            ``max_bytes``, is not UTF-8, not JSON (``NaN`` and ``Infinity`` included) or not
            an object.

    """
    if not path:
        return None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptFile(f"cannot stat: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CorruptFile("not a regular file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise CorruptFile(f"cannot read: {exc}") from None
    if len(raw) > max_bytes:
        raise CorruptFile(f"larger than {max_bytes} bytes")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise CorruptFile(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise CorruptFile("nested too deeply") from None
    except ValueError as exc:
        raise CorruptFile(f"not JSON: {exc}") from None
    return table(data, "file")


def number(value: Any, name: str, low: float, high: float) -> float:
    """``value`` as a float when it is a JSON number from ``low`` to ``high`` (both included).

    Compared before it is converted, so an integer too large for a float is refused, not raised.

    Raises:
        CorruptFile: a bool, a non-number, NaN, an infinity or a number outside the range; the
            message names ``name``.

    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CorruptFile(f"{name}: expected a number, got {type(value).__name__}")
    if not low <= value <= high:  # also false for NaN
        raise CorruptFile(f"{name}: {str(value)[:32]} is not from {low:g} to {high:g}")
    return float(value)


def table(value: Any, name: str) -> dict[str, Any]:
    """``value`` when it is a JSON object.

    Raises:
        CorruptFile: it is not; the message names ``name``.

    """
    if not isinstance(value, dict):
        raise CorruptFile(f"{name}: expected an object, got {type(value).__name__}")
    return value
