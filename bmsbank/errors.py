"""The error tree, grouped by the phase in which things go wrong.

Both native modules and their pure-Python twins raise these same classes, so callers and tests
never care which implementation is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence


class BmsBankError(Exception):
    """Base of every error bmsbank raises on purpose."""


class ConfigError(BmsBankError):
    """A configuration value is unknown or invalid; the message names the key and the file.

    One error may carry every problem of a file (:meth:`collect`): ``key``, ``source`` and
    ``expected`` are the first one's, ``problems`` all of them, and ``str()`` is one line per
    problem, ``FILE: KEY: what is expected``. A line never holds a control character: whatever the
    file or the caller put in, it is shown escaped, so one problem is always one line.
    """

    def __init__(self, key: str, source: str, expected: str) -> None:
        self.key = key
        self.source = source
        self.expected = expected
        #: one line: ``FILE: KEY: what is expected``
        self.line = one_line(f"{source}: {key}: {expected}")
        #: every problem this error reports, in the order found (itself when it is alone)
        self.problems: tuple[ConfigError, ...] = (self,)
        super().__init__(self.line)

    @classmethod
    def collect(cls, problems: Sequence[ConfigError]) -> ConfigError:
        """One error reporting ``problems`` (at least one), one line each."""
        flat = [p for problem in problems for p in problem.problems]
        first = flat[0]
        error = cls(first.key, first.source, first.expected)
        error.problems = tuple(flat)
        error.args = ("\n".join(p.line for p in flat),)
        return error

    def lines(self) -> list[str]:
        """One line per problem."""
        return [p.line for p in self.problems]


def one_line(text: str) -> str:
    """``text`` with every non-printable character (newline, tab, NUL, ...) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


#: The link counters, one declared set: every way a reply can fail has its own kind, and a
#: FrameError of any other kind is a bug (raised as ValueError where it is made).
LINK_COUNTERS: tuple[str, ...] = (
    "ok",  # complete replies decoded
    "timeout",  # no byte at all before the reply timeout
    "truncated",  # some bytes, but no complete frame (or reply part) before the timeout
    "checksum",  # a complete frame whose check value is wrong
    "length_check",  # an ASCII frame whose LENGTH check nibble (LCHKSUM) is wrong
    "hex",  # an ASCII-hex frame with a character that is not a hex digit
    "malformed",  # a frame that fails length, trailer or content checks
    "tlv",  # a TLV payload with an unknown tag or a value running past the frame
    "exception",  # a Modbus exception reply (function | 0x80)
    "sequence",  # a multi-frame reply with a missing, repeated or out-of-order frame
    "address",  # a reply from another address than the one asked
    "unexpected",  # a valid reply that does not answer the request
    "noise_bytes",  # bytes skipped between frames
    "port_errors",  # the port could not be opened, read or written
)
FRAME_KINDS = frozenset(LINK_COUNTERS) - {"ok", "noise_bytes", "port_errors", "timeout"}


class FrameError(BmsBankError):
    """Bytes from a BMS do not form a valid frame. Carries the raw bytes for the log.

    ``kind`` is the link counter it is counted under, one of :data:`FRAME_KINDS`.
    """

    def __init__(self, reason: str, raw: bytes = b"", kind: str = "malformed") -> None:
        if kind not in FRAME_KINDS:
            raise ValueError(f"FrameError kind {kind!r} is not a declared link counter")
        self.reason = reason
        self.raw = bytes(raw)
        #: counter name in the link statistics: checksum, truncated, address, malformed, ...
        self.kind = kind
        super().__init__(f"{reason} [{self.raw.hex(' ')}]" if raw else reason)


class ChecksumError(FrameError):
    """The frame's check value does not match its content."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        super().__init__(reason, raw, kind="checksum")


class TransportError(BmsBankError):
    """A port could not be opened, read or written."""


class LinkTimeout(TransportError):
    """A BMS did not answer in time (silence or a truncated reply)."""


class MessageError(BmsBankError):
    """A ZeroMQ message does not validate against the schema; it is rejected and counted."""


class ControlError(BmsBankError):
    """A control request was refused or failed; the message says why and goes to the requester."""
