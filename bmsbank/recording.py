"""Recordings of the tap: the file format, the writer with rotation, the reader.

A recording file (format 1, ``docs/RECORD.md``)::

    MAGIC (12 bytes)  u32 header length  header (msgpack map)  raw-deflate stream of records

The header says ``format``, the ``bmsbank`` version, ``created`` (unix [s]) and what a replay
needs to rebuild the arbiter's engine: ``bank`` (the config file's ``[bank]`` table, as
``bmsbank limits`` takes it), ``packs`` (configured pack ids, engine order) and ``families``
(pack id -> BMS family of its port, "" = any). Each record is ``>dBI`` (receive time, unix [s];
kind: 0 state, 1 bank; body length [bytes]) followed by the msgpack body exactly as received
from the tap. The deflate stream (RFC 1951, Python's :mod:`zlib` with ``wbits=-15``) is
sync-flushed once a second: what was flushed can be read even when the process or the power
died after it; a cut record at the end is reported and skipped.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgpack

from bmsbank.schema import MAX_BANK_BYTES

MAGIC = b"BMSBANK-REC\n"
FORMAT = 1
STATE, BANK = 0, 1  #: record kinds
KINDS = {b"state": STATE, b"bank": BANK}
RECORD = struct.Struct(">dBI")  #: receive time [s], kind, body length [bytes]
LENGTH = struct.Struct(">I")
MAX_HEADER = 1 << 20  # bytes; a config's [bank] table is a few KiB
LEVEL = 3  # zlib level: most of level 9's ratio on repetitive msgpack at a fraction of its CPU
CHUNK = 1 << 16  # bytes read (and at most decompressed) at a time


class RecordingError(ValueError):
    """A file that is not a readable recording (the message names the file)."""


@dataclass(frozen=True)
class Record:
    """One message of the tap as recorded."""

    received: float  #: unix time the recorder received it [s]
    kind: int  #: :data:`STATE` or :data:`BANK`
    body: bytes  #: the msgpack body as published


def rotated(path: str, keep: int) -> list[str]:
    """``path`` and its older rotations that exist, oldest first (``path.N`` ... ``path``)."""
    older = [f"{path}.{k}" for k in range(keep, 0, -1)]
    return [p for p in older if os.path.exists(p)] + [path]


class Writer:
    """Appends records to ``path``, flushed every ``flush_every`` s, rotated at ``max_bytes``.

    On rotation ``path`` becomes ``path.1``, ``path.1`` becomes ``path.2`` and so on; at most
    ``keep`` older files are kept (the oldest is removed). Each file starts with the header.
    """

    def __init__(
        self, path: str, header: dict[str, Any], max_bytes: int, keep: int, flush_every: float = 1.0
    ) -> None:
        self.path = path
        self.header = header
        self.max_bytes = max_bytes
        self.keep = keep
        self.flush_every = flush_every
        self.records = 0  #: records written since start
        self.rotations = 0
        self.fh: BinaryIO | None = None
        self.deflate: Any = None
        self.dirty = False  #: records not flushed yet
        self.next_flush = time.monotonic() + flush_every
        self._open()

    def _open(self) -> None:
        head = msgpack.packb(
            {**self.header, "format": FORMAT, "created": time.time()}, use_bin_type=True
        )
        fh = open(self.path, "wb")  # noqa: SIM115 - kept open across calls, closed in close()
        fh.write(MAGIC + LENGTH.pack(len(head)) + head)
        self.fh, self.deflate = fh, zlib.compressobj(LEVEL, zlib.DEFLATED, -15)

    def write(self, kind: int, body: bytes, received: float) -> None:
        """Add one record; flushes (and may rotate) when a flush is due."""
        assert self.fh is not None
        self.fh.write(self.deflate.compress(RECORD.pack(received, kind, len(body)) + body))
        self.records += 1
        self.dirty = True
        if time.monotonic() >= self.next_flush:
            self.flush()

    def flush(self) -> None:
        """Make every record so far readable after a crash; rotate when the file is full."""
        assert self.fh is not None
        self.next_flush = time.monotonic() + self.flush_every
        if not self.dirty:
            return
        self.fh.write(self.deflate.flush(zlib.Z_SYNC_FLUSH))
        self.fh.flush()
        os.fsync(self.fh.fileno())  # a power cut loses at most this second too
        self.dirty = False
        if self.fh.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._finish()
        for k in range(self.keep, 0, -1):
            older = f"{self.path}.{k - 1}" if k > 1 else self.path
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{k}")
        if self.keep == 0:
            os.remove(self.path)
        self.rotations += 1
        self._open()

    def _finish(self) -> None:
        assert self.fh is not None
        self.fh.write(self.deflate.flush(zlib.Z_FINISH))
        self.fh.close()
        self.fh = None

    def close(self) -> None:
        """End the stream and close the file."""
        if self.fh is not None:
            self._finish()


class Reader:
    """The header and records of one recording file.

    ``problems`` lists what was skipped (a cut last record, a damaged stream), each naming the
    file; reading stops at the first damage, since nothing after it can be framed again.
    """

    def __init__(self, path: str) -> None:
        """Open ``path`` and read its header.

        Raises:
            RecordingError: not a recording, or an unknown format.

        """
        self.path = path
        self.problems: list[str] = []
        try:
            self.fh = open(path, "rb")  # noqa: SIM115 - closed at the end of records()
        except OSError as exc:
            raise RecordingError(f"{path}: {exc.strerror}") from None
        self.header = self._header()

    def _header(self) -> dict[str, Any]:
        start = self.fh.read(len(MAGIC) + LENGTH.size)
        if start[: len(MAGIC)] != MAGIC or len(start) < len(MAGIC) + LENGTH.size:
            self.fh.close()
            raise RecordingError(
                f"{self.path}: not a bmsbank recording (no {MAGIC!r} at the start)"
            )
        (size,) = LENGTH.unpack_from(start, len(MAGIC))
        raw = self.fh.read(min(size, MAX_HEADER + 1))
        try:
            if size > MAX_HEADER or len(raw) != size:
                raise ValueError(f"header of {size} bytes cut or over {MAX_HEADER}")
            header = msgpack.unpackb(raw, raw=False)
            if not isinstance(header, dict):
                raise ValueError("header is not a map")
        except ValueError as exc:  # msgpack's errors are ValueErrors
            self.fh.close()
            raise RecordingError(f"{self.path}: damaged header: {exc}") from None
        if header.get("format") != FORMAT:
            self.fh.close()
            raise RecordingError(
                f"{self.path}: format {header.get('format')!r}; this bmsbank reads format {FORMAT}"
            )
        return header

    def records(self) -> Iterator[Record]:
        """Every record in order (then the file is closed)."""
        inflate = zlib.decompressobj(-15)
        buf = b""
        with self.fh:
            while True:
                chunk = self.fh.read(CHUNK)
                try:
                    data = inflate.decompress(chunk) if chunk else inflate.flush()
                except zlib.error as exc:
                    self.problems.append(f"{self.path}: damaged after {self.fh.tell()} bytes "
                                         f"({exc}); the rest is skipped")  # fmt: skip
                    return
                buf += data
                buf, done = yield from self._split(buf)
                if done:
                    return
                if not chunk:
                    break
        if buf:
            self.problems.append(f"{self.path}: the last record is cut ({len(buf)} bytes; "
                                 "the recorder stopped while writing it), skipped")  # fmt: skip

    def _split(self, buf: bytes) -> Generator[Record, None, tuple[bytes, bool]]:
        """Yield the whole records in ``buf``; returns (the rest, whether to stop)."""
        at = 0
        while len(buf) - at >= RECORD.size:
            received, kind, size = RECORD.unpack_from(buf, at)
            if kind not in (STATE, BANK) or size > MAX_BANK_BYTES:
                self.problems.append(f"{self.path}: damaged record (kind {kind}, {size} bytes); "
                                     "the rest is skipped")  # fmt: skip
                return b"", True
            end = at + RECORD.size + size
            if end > len(buf):
                break
            yield Record(received, kind, buf[at + RECORD.size : end])
            at = end
        return buf[at:], False


def header_for(config: Any) -> dict[str, Any]:
    """What a replay needs of a loaded :class:`bmsbank.config.Config` (see the module doc)."""
    import tomllib

    from bmsbank import __version__
    from bmsbank.config import AUTO

    try:
        with open(config.source, "rb") as fh:
            bank = tomllib.load(fh).get("bank", {})
    except (OSError, tomllib.TOMLDecodeError):  # loaded a moment ago: changed since
        bank = {}
    families = {f"{p.name}:{a}": "" if p.bms == AUTO else p.bms  # as the arbiter's
                for p in config.ports for a in p.addresses}  # fmt: skip
    return {"bmsbank": __version__, "source": config.source, "name": config.bank.name,
            "bank": bank, "packs": config.pack_ids(), "families": families}  # fmt: skip


@dataclass
class Tally:
    """What :func:`record` took."""

    states: int = 0
    banks: int = 0
    bad: int = 0  #: messages of the wrong shape (counted and skipped)


def record(sock: Any, writer: Writer, until: float | None = None) -> Tally:
    """Write every message of the subscribed ``sock`` until monotonic ``until`` (or forever).

    Wakes for each message and, while records wait, for the next flush; nothing else.
    """
    tally = Tally()
    while until is None or time.monotonic() < until:
        now = time.monotonic()
        wake = [t for t in (until, writer.next_flush if writer.dirty else None) if t is not None]
        timeout = None if not wake else max(0, int((min(wake) - now) * 1000) + 1)
        if not sock.poll(timeout):
            writer.flush()
            continue
        parts = sock.recv_multipart()
        kind = KINDS.get(parts[0]) if len(parts) == 2 else None
        if kind is None:
            tally.bad += 1
            continue
        writer.write(kind, parts[1], time.time())
        if kind == BANK:
            tally.banks += 1
        else:
            tally.states += 1
    writer.flush()
    return tally
