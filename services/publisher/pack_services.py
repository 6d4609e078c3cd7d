"""One Venus battery service per pack: ``<[dbus] service>_<pack>``, fed by the tap's states.

A pack's service appears once its first state arrives (then its cell and sensor counts are known,
so its paths never change afterwards) and stays while the publisher runs. Each state updates it
with ONE ItemsChanged holding only what changed (paths are recomputed only for the parts of the
state that differ from the last: :func:`pack_paths.changed_values`); a bank message only changes
/Connected and the measurements when the arbiter's freshness for the pack changes. Liveness
follows the arbiter: a pack the bank lists offline -- or every pack, while the bank itself is
stale -- shows /Connected = 0, unknown measurements and the BmsCable alarm.

Per-pack switches (charge, discharge, balancing off; SoC reset) are written on the pack's service
and carried out through the control channel: see :mod:`pack_controls`.

Each service has its own D-Bus connection (Venus maps a connection's unique name to one service)
and claims its own DeviceInstance. Its unique id follows the BMS, not the cable: a pack whose first
state carries a serial number is ``<bank unique id>_sn_<serial>``, so a pack moved to another port
or address keeps its DeviceInstance, custom name and VRM history; a pack without one (or whose
serial another pack already uses: the arbiter warns about that) is ``<bank unique id>_<pack>``.
Without a settings service pack ``k`` of the configured bank (from 0) takes ``[dbus]
device_instance + 1 + k``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from bmsbank import __version__
from bmsbank.config import Config
from bmsbank.control import ControlClient

from . import pack_paths, paths
from .dbus_service import VeService
from .identity import Identity, NameStore, ServiceIdentity, bus_element
from .pack_controls import PackControls, Requester

log = logging.getLogger(__name__)

BACKOFF_MAX = 30.0  # s between connection attempts while the bus is away


class PackService:
    """The D-Bus service of one pack."""

    def __init__(
        self, config: Config, pack: str, index: int, state: Mapping[str, Any],
        names: NameStore, dbus_address: str | None, requester: Requester, serial: str = "",
    ) -> None:  # fmt: skip
        self.pack = pack
        self.state: Mapping[str, Any] = state
        self.online = True
        self.cells = len(state["cells"])
        self.sensors = len(state["temperatures"])
        self.serial = serial  #: the serial number its identity follows ("": the pack id)
        self.health: Mapping[str, Any] | None = None  #: the bank's last cell_health of it
        uid = f"{paths.unique_id(config)}_{bus_element(f'sn_{serial}' if serial else pack)}"
        name = f"{config.bank.name} {pack}"
        self.ve = VeService(dbus_address, f"{config.dbus.service}_{bus_element(pack)}")
        fallback = Identity(uid, min(1023, config.dbus.device_instance + 1 + index), name)
        self.keeper = ServiceIdentity(self.ve, fallback, names)
        for path, value in self._static(config).items():
            writable = path == "/CustomName"
            self.ve.add_path(
                path, value, writable=writable,
                validator=paths.custom_name_ok if writable else None,
                on_set=self.keeper.renamed if writable else None,
            )  # fmt: skip
        health = pack_paths.cell_health_values(None, self.cells)  # paths fixed from the start
        for path, value in (self.values() | health).items():
            self.ve.add_path(path, value, fmt=pack_paths.fmt(path))
        self.controls = PackControls(pack, state["bms"], self.ve, requester)
        self.controls.add_paths()

    def _static(self, config: Config) -> dict[str, Any]:
        return {
            "/Mgmt/ProcessName": paths.PROCESS_NAME,
            "/Mgmt/ProcessVersion": __version__,
            "/Mgmt/Connection": f"{paths.CONNECTION} {self.pack}",
            "/DeviceInstance": self.keeper.identity.instance,
            "/ProductId": int(config.dbus.product_id),
            "/ProductName": f"bmsbank pack ({self.state['bms']})",
            "/FirmwareVersion": __version__,
            "/HardwareVersion": str(self.state.get("hardware") or self.state["bms"]),
            "/CustomName": self.keeper.identity.custom_name,
            "/Serial": self.serial or self.keeper.identity.unique_id,
        }

    def values(self) -> dict[str, Any]:
        """The pack's dynamic paths for its present state and liveness."""
        return pack_paths.pack_values(self.state, self.online, self.cells, self.sensors)

    async def connect(self) -> None:
        """Claim the identity and take the name (raises like :meth:`VeService.connect`)."""
        await self.ve.connect(prepare=self.keeper.claim)


class PackServices:
    """Every pack's service; see the module docstring."""

    def __init__(self, config: Config, dbus_address: str | None, names: NameStore) -> None:
        self.config = config
        self.dbus_address = dbus_address
        self.names = names
        self.order = list(config.pack_ids()) or list(config.topology().ids)
        self.services: dict[str, PackService] = {}
        self.updates = 0  #: updates that changed something (one ItemsChanged each)
        self.control: ControlClient | None = None  #: set by the publisher while it runs
        self._online: dict[str, bool] = {}
        self._wake = asyncio.Event()
        self._watchers: set[asyncio.Task] = set()  #: one per connected service (see _watch)

    async def on_state(self, state: Mapping[str, Any]) -> None:
        """Show a validated state on its pack's service (creating the service on first sight)."""
        pack = state["pack"]
        service = self.services.get(pack)
        if service is None:
            if pack not in self.order:
                self.order.append(pack)
            serial = state.get("serial") or ""
            if any(s.serial == serial for s in self.services.values()):
                serial = ""  # two packs, one id: each keeps its own identity by pack id
            service = PackService(self.config, pack, self.order.index(pack), state, self.names,
                                  self.dbus_address, self.request, serial)  # fmt: skip
            service.online = self._online.get(pack, True)
            self.services[pack] = service
            self._wake.set()
            return
        previous, service.state = service.state, state
        if service.online:  # only what this state may change ("by difference")
            changed = pack_paths.changed_values(previous, state, service.cells, service.sensors)
            if await service.ve.update(changed):
                self.updates += 1
        else:
            await self._update(service)

    async def on_bank(self, bank: Mapping[str, Any]) -> None:
        """Follow the bank's view of which packs are online and what it learnt of their cells.

        Every pack is offline in the safe state; one ItemsChanged per pack, only on a change.
        """
        for row in bank.get("packs") or ():
            if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
                continue
            online = bool(row.get("online"))
            self._online[row["id"]] = online
            service = self.services.get(row["id"])
            if service is None:
                continue
            changed: dict[str, Any] = {}
            if service.online != online:
                service.online = online
                changed = service.values()
            health = row.get("cell_health")
            if health != service.health:  # rebuilt by the arbiter at most every 10 s
                service.health = health
                changed.update(pack_paths.cell_health_values(health, service.cells))
            if changed and await service.ve.update(changed):
                self.updates += 1

    async def request(self, pack: str, action: str, value: Any) -> dict[str, Any]:
        """Send one control request (what a pack's writable switch does); never raises."""
        if self.control is None:
            return {"ok": False, "error": "the control channel is not running"}
        return await self.control.request(pack, action, value)

    async def _update(self, service: PackService) -> None:
        if await service.ve.update(service.values()):
            self.updates += 1

    @property
    def signals(self) -> int:
        """D-Bus signals sent by every pack service."""
        return sum(s.ve.signals for s in self.services.values())

    async def maintain(self) -> None:
        """Connect services that are not on the bus, with backoff; runs until cancelled.

        While every service is on the bus it sleeps until a new pack appears or a connection
        drops (a watcher per connection wakes it), instead of checking every second.
        """
        backoff, failing = 1.0, False
        while True:
            down = [s for s in self.services.values() if not s.ve.connected]
            for service in down:
                try:
                    await asyncio.wait_for(service.connect(), 5.0)
                    backoff, failing = 1.0, False
                    self._watch(service)
                except Exception as exc:  # bus away, name taken: retry, log once per outage
                    if not failing:
                        log.warning("pack service %s not registered (%s); retrying",
                                    service.ve.service_name, exc)  # fmt: skip
                        failing = True
                    break
            self._wake.clear()
            # Checked after the clear: a pack that appeared meanwhile sets the event again.
            pending = any(not s.ve.connected for s in self.services.values())
            wait = backoff if failing else (1.0 if pending else None)
            if failing:
                backoff = min(backoff * 2, BACKOFF_MAX)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def _watch(self, service: PackService) -> None:
        """Wake :meth:`maintain` when ``service``'s connection ends."""

        async def watch() -> None:
            await service.ve.wait_disconnected()
            self._wake.set()

        task = asyncio.create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def close(self) -> None:
        """Release every name."""
        for task in list(self._watchers):
            task.cancel()
        for service in self.services.values():
            await service.ve.close()
