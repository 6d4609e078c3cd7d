"""The error tree, grouped by the phase in which things go wrong.

Both native modules and their pure-Python twins raise these same classes, so callers and tests
never care which implementation is loaded.
"""

from __future__ import annotations


class BmsBankError(Exception):
    """Base of every error bmsbank raises on purpose."""


class ConfigError(BmsBankError):
    """A configuration value is unknown or invalid; the message names the key and the file."""

    def __init__(self, key: str, source: str, expected: str) -> None:
        self.key = key
        self.source = source
        self.expected = expected
        super().__init__(f"{source}: {key}: {expected}")


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
