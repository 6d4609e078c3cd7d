"""A simulated battery speaking the Victron CAN-bus BMS protocol, from a :class:`BatteryModel`.

Its frames are the publisher's own encoder's (:func:`bmsbank.services.publisher.canbms.frames`)
for a one-pack "bank" made from the model, so the family is tested against the encoder here and
against captured Pylontech/BYD frames in tests/test_victron_can.py. The battery's own limits
(CVL, CCL, DCL) are the simulator's attributes, settable by tests and the demo. Nothing is
answered: the battery broadcasts.
"""

from __future__ import annotations

from typing import Any

from bmsbank.config import CanConfig
from bmsbank.services.poller.can_family import CanFrame, CanSimulator
from bmsbank.services.poller.plugins.victron_can.family import ADDRESS, Family
from bmsbank.services.poller.simulators.battery import CELL_UNDER_VOLTAGE, BatteryModel
from bmsbank.services.publisher import canbms

CELL_CVL = 3.45  #: V per cell of the simulated battery's CVL
C_RATE = 0.5  #: the simulated battery's CCL and DCL, times its capacity [A/Ah]


class Simulator(CanSimulator):
    """One Victron-protocol battery (the protocol has no address: the key of ``packs`` is 0)."""

    family = Family

    def __init__(self, packs: dict[int, BatteryModel], manufacturer: str = "BYD") -> None:
        if list(packs) != [ADDRESS]:
            raise ValueError(f"a Victron-protocol bus carries one battery at {ADDRESS}")
        super().__init__(packs)
        self.model = packs[ADDRESS]
        self.config = CanConfig(manufacturer=manufacturer)
        self.cvl = CELL_CVL * self.model.cells  #: V, the battery's own charge voltage limit
        self.ccl = C_RATE * self.model.capacity  #: A, its charge current limit
        self.dcl = C_RATE * self.model.capacity  #: A, its discharge current limit
        self.cell_extremes = True  #: send 0x373 (False: like a Pylontech US, no cell figures)

    def bank(self) -> dict[str, Any]:
        """The model as the one-pack bank message the publisher's encoder takes."""
        m = self.model
        cells = m.cell_voltages
        alarms = {name: 2 for name in m.active_alarms}
        return {
            "cvl": self.cvl, "ccl": self.ccl, "dcl": self.dcl,
            "low_voltage": CELL_UNDER_VOLTAGE * m.cells,
            "soc": m.bms_soc, "soh": 100.0, "voltage": m.voltage, "current": m.effective_current,
            "temperature": m.temperatures[0] if m.temperatures else None,
            "alarms": {**dict.fromkeys(("high_voltage", "low_voltage", "high_temperature",
                                        "cell_imbalance"), 0), **alarms},
            "online": 1, "blocking_charge": 0, "blocking_discharge": 0, "offline": 0,
            "min_cell_voltage": min(cells) if self.cell_extremes else None,
            "max_cell_voltage": max(cells) if self.cell_extremes else None,
            "min_temperature": min(m.temperatures) if self.cell_extremes else None,
            "max_temperature": max(m.temperatures) if self.cell_extremes else None,
            "capacity": m.capacity, "installed_capacity": m.capacity, "name": "",
        }  # fmt: skip

    def broadcast(self) -> list[CanFrame]:
        """One second's frames (0x373 left out when ``cell_extremes`` is off)."""
        return [
            CanFrame(can_id, data)
            for can_id, data in canbms.frames(self.bank(), self.config)
            if self.cell_extremes or can_id != 0x373
        ]
