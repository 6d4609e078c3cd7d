"""Closed-loop plant: a simulated LiFePO4 bank, Victron chargers and loads driving the engine.

``run("feed-in", seed=1)`` returns the procedure's metrics as a JSON-serialisable dict;
:data:`PROCEDURES` names every procedure (seed 004 §1.5.3 tests and failure cases).
"""

from bmsbank.plant.procedures import PROCEDURES, run

__all__ = ["PROCEDURES", "run"]
