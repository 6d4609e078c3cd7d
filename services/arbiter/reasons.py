"""Why each limit has its value, in words: the engine's reason tuples turned into text.

A reason tuple is ``(rule, pack, item, value, amount, share)`` (see ``bmsbank.native._limits_py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from bmsbank.config import BankConfig
from bmsbank.native.limits import CHARGE_BLOCKING, DISCHARGE_BLOCKING

MEMO_SIZE = 256  #: texts remembered at most


class Explainer:
    """Texts for one bank: knows the pack ids and the configured windows."""

    def __init__(self, bank: BankConfig, ids: Sequence[str]) -> None:
        self.bank = bank
        self.ids = list(ids)
        #: (reason, side, cut) -> text: a bank in steady state gives the same reasons tick after
        #: tick, and each text costs a table of closures to build
        self._texts: dict[tuple, str] = {}

    def _who(self, pack: int) -> str:
        return self.ids[pack] if 0 <= pack < len(self.ids) else "bank"

    def current(self, reason: tuple, side: str, cut: tuple | None = None) -> str:
        """Why CCL (``side`` = "charge") or DCL (``side`` = "discharge") has its value [A]."""
        key = (reason, side, cut)
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) >= MEMO_SIZE:  # values that keep moving: start afresh
                self._texts.clear()
            text = self._texts[key] = self._current(reason, side, cut)
        return text

    def _current(self, reason: tuple, side: str, cut: tuple | None) -> str:
        rule, pack, item, value, amount, share = reason
        who = self._who(pack)
        window = self.bank.charge_window if side == "charge" else self.bank.discharge_window
        names = CHARGE_BLOCKING if side == "charge" else DISCHARGE_BLOCKING
        texts = {
            "config": lambda: f"{who}: configured maximum {amount:g} A",
            "bms": lambda: f"{who}: the BMS allows {value:g} A",
            "cell_table": lambda: f"{who} cell {item + 1} at {value:.3f} V: {amount:.1f} A",
            "temperature_window": lambda: (
                f"{who} T{item + 1} at {value:.1f} °C "
                f"{'below' if value < window[0] else 'above'} the {side} window "
                f"({window[0]:g} to {window[1]:g} °C): 0 A"
            ),
            "temperature_table": lambda: f"{who} T{item + 1} at {value:.1f} °C: {amount:.1f} A",
            "no_temperature": lambda: f"{who} reports no temperature: 0 A",
            "soc_table": lambda: f"{who} SoC {value:.1f} %: {amount:.1f} A",
            "mosfet_table": lambda: f"{who} MOSFET at {value:.1f} °C: {amount:.1f} A",
            "fet": lambda: f"{who} {side} FET off: 0 A",
            "alarm": lambda: f"{who} alarm {names[item].replace('_', ' ')}: 0 A",
            "cells_mismatch": lambda: "parallel strings report different cell counts: 0 A",
            "no_pack": lambda: f"no pack online: safe state {amount:g} A",
            "held": lambda: f"held after a cut, then up to {amount:.1f} A",
            "recovering": lambda: f"ramping up to {amount:.1f} A",
        }
        text = texts.get(rule, lambda: rule)()
        if rule in ("held", "recovering") and cut is not None:
            text += f" (cut: {self.current(cut, side)})"
        if share == share and share < 1.0 and amount > 0.0:  # NaN: no share
            text += f"; string share {share:.0%}: bank {amount / share:.1f} A"
        return text

    def voltage(self, reason: tuple, state: str, cells: int) -> str:
        """Why CVL has its value [V]."""
        rule, pack, item, value, amount, _ = reason
        who = self._who(pack)
        texts = {
            "no_cells": lambda: "no pack has reported its cells yet",
            "state": lambda: f"{state}: {cells} cells x {value:.3f} V = {amount:.2f} V",
            "bms_cvl": lambda: f"{who}: the BMSs of its string allow {amount:.2f} V",
            "unseen": lambda: f"{who} unseen: held at most {amount:.2f} V until every pack reports",
            "cell_over": lambda: (
                f"{who} cell {item + 1} at {value:.3f} V over "
                f"{self.bank.cell_charge_voltage:.3f} V: cut to {amount:.2f} V"
            ),
            "ramp": lambda: f"{state}: ramping to {amount:.2f} V",
            "resume": lambda: f"every pack reports again: back to {amount:.2f} V",
            "held": lambda: (
                f"{state}: held below {amount:.2f} V while the highest cell ({value:.3f} V) "
                "settles after a cut"
            ),
        }
        return texts.get(rule, lambda: rule)()
