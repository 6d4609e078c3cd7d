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


class FrameError(BmsBankError):
    """Bytes from a BMS do not form a valid frame. Carries the raw bytes for the log."""

    def __init__(self, reason: str, raw: bytes = b"", kind: str = "malformed") -> None:
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
