"""What cell health learnt, as the arbiter keeps it across restarts (``state.cells.json``).

Per pack seen: its cell count, each cell's resistance samples [µΩ at 25 °C] and capacity samples
[% of the pack's median cell], the first-high and first-low cells of the last passes (-1: none
clearly first), and the counts of steps and charges. :func:`restore` checks every value against
what :func:`snapshot` writes and takes a file whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmsbank.persisted import CorruptFile, number, table
from bmsbank.services.arbiter.cell_health import (
    CAP_WINDOW,
    RANK_WINDOW,
    WINDOW,
    CellHealth,
    PackCells,
)

MAX_CELLS = 64  #: cells of a pack (as a state's)
MAX_COUNT = 2**53  #: steps or charges (any count a float holds exactly)


def snapshot(health: CellHealth) -> dict[str, Any]:
    """Every pack that was seen, as JSON-able values."""
    return {pid: _pack(p) for pid, p in health.packs.items() if p.n}


def _pack(p: PackCells) -> dict[str, Any]:
    return {
        "cells": p.n,
        "r": [[round(1e6 * r) for r in samples] for samples in p.r],
        "cap": [[round(c, 2) for c in samples] for samples in p.cap],
        "high": [-1 if k is None else k for k in p.high.firsts],
        "low": [-1 if k is None else k for k in p.low.firsts],
        "steps": p.steps,
        "charges": p.charges,
    }


def restore(health: CellHealth, snap: Mapping[str, Any]) -> list[str]:
    """Give ``health`` back a :func:`snapshot`; returns the ids of the packs given back.

    Packs no longer in the bank are left out.

    Raises:
        CorruptFile: a pack's values are not what :func:`snapshot` writes (the message names
            the pack and the field); then no pack is taken.

    """
    taken = {}
    for pid, kept in table(snap, "packs").items():
        if pid in health.packs:
            old = health.packs[pid]
            try:
                taken[pid] = _restored(
                    PackCells(pid, old.capacity_ah, old.settings), table(kept, pid)
                )
            except CorruptFile as exc:
                raise CorruptFile(f"{pid}: {exc}") from None
    health.packs.update(taken)
    return sorted(taken)


def _restored(p: PackCells, snap: Mapping[str, Any]) -> PackCells:
    n = int(number(snap.get("cells"), "cells", 1, MAX_CELLS))
    r = _lists(snap.get("r"), "r", n, WINDOW, 1.0, 1e6)
    cap = _lists(snap.get("cap"), "cap", n, CAP_WINDOW, 10.0, 1000.0)
    ranks = [_lists([snap.get(key)], key, 1, RANK_WINDOW, -1, n - 1)[0] for key in ("high", "low")]
    if any(x != int(x) for x in [*ranks[0], *ranks[1]]):
        raise CorruptFile("high/low: expected cell numbers")
    steps = int(number(snap.get("steps"), "steps", 0, MAX_COUNT))
    charges = int(number(snap.get("charges"), "charges", 0, MAX_COUNT))
    p.reset(n)
    for k in range(n):
        p.r[k].extend(x / 1e6 for x in r[k])
        p.cap[k].extend(cap[k])
    for rank, firsts in zip((p.high, p.low), ranks, strict=True):
        rank.firsts.extend(None if x < 0 else int(x) for x in firsts)
    p.steps, p.charges = steps, charges
    return p


def _lists(value: Any, name: str, n: int, most: int, low: float, high: float) -> list[list[float]]:
    """``n`` lists of at most ``most`` numbers from ``low`` to ``high``.

    Raises:
        CorruptFile: naming ``name``.

    """
    if not isinstance(value, list) or len(value) != n:
        raise CorruptFile(f"{name}: expected {n} lists")
    out = []
    for k, values in enumerate(value):
        if not isinstance(values, list) or len(values) > most:
            raise CorruptFile(f"{name}[{k}]: expected at most {most} numbers")
        out.append([number(x, f"{name}[{k}]", low, high) for x in values])
    return out
