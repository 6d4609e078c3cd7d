"""Which serial number each pack reports, and the two set-up mistakes it reveals.

A pack is ``port:address``; its state also carries the serial number (or id string) its BMS
reports, where it reports one. Two packs reporting the same serial are one BMS read twice (two
configured ports on one adapter, two addresses answered by one board) or two BMSs left with one
factory id; a pack whose serial changes was re-cabled or had its BMS replaced. Either way the
user should know, once per occurrence, not at every state.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class SerialWatch:
    """Remembers each pack's serial; warns once per duplicate pair and per change."""

    def __init__(self) -> None:
        self.serials: dict[str, str] = {}  #: pack -> the serial it reported last ("" never kept)
        self._warned: set[tuple[str, ...]] = set()

    def see(self, pack: str, serial: str) -> list[str]:
        """Note that ``pack`` reports ``serial``; return the warnings it raises for the first time.

        Args:
            pack: the pack id (``port:address``).
            serial: the serial number of its latest accepted state ("" when the BMS has none).

        """
        before = self.serials.get(pack)
        if not serial or serial == before:
            return []
        warnings = []
        if before is not None and self._once("changed", pack, before, serial):
            warnings.append(f"[{pack}] serial number changed from {before!r} to {serial!r}: "
                            f"a swapped cable or a replaced BMS?")  # fmt: skip
        self.serials[pack] = serial
        for other, theirs in self.serials.items():
            if other != pack and theirs == serial and self._once("same", *sorted((pack, other))):
                warnings.append(f"[{pack}] reports serial number {serial!r} as {other} does: one "
                                f"BMS configured twice, or two BMSs with one id")  # fmt: skip
        for text in warnings:
            log.warning("%s", text)
        return warnings

    def _once(self, *key: str) -> bool:
        if key in self._warned:
            return False
        self._warned.add(key)
        return True
