"""bmsbank: many BMS boards, one battery bank for a Victron system."""

__version__ = "0.1.0"
