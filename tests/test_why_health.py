"""Output health end to end: a real arbiter, the publisher on a private dbus-daemon and a
python-can virtual bus; the health travels the control channel and shows in the bank."""

from __future__ import annotations

import asyncio
import time
import uuid

import can
import zmq
import zmq.asyncio

from bmsbank.config import load
from bmsbank.schema import TOPIC_BANK, unpack, validate_bank
from bmsbank.services.publisher.service import Publisher
from tests.zmqhelp import running_arbiter

NAME = "com.victronenergy.battery.whytest"


def config_file(tmp_path, arbiter, channel: str) -> str:
    c = arbiter.config
    path = tmp_path / "bmsbank.toml"
    path.write_text(
        f'runtime_dir = "{tmp_path}"\n[bank]\nname = "h"\nstale_after = 3.0\ninterval = 0.2\n'
        f'[dbus]\nservice = "{NAME}"\nnames_file = "{tmp_path}/names.json"\n'
        f'pack_services = false\n'
        f'[can]\nenabled = true\ninterface = "virtual"\nchannel = "{channel}"\n'
        f'energy_file = "{tmp_path}/energy.json"\n'
        f'[zmq]\ntap = "{c.tap_endpoint}"\nstates = "{c.states_endpoint}"\n'
        f'control = "{c.control_endpoint}"\n'
    )  # fmt: skip
    return str(path)


async def next_bank(sub, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await sub.poll(100):
            bank = validate_bank(unpack((await sub.recv_multipart())[1]))
            if pred(bank):
                return bank
    raise AssertionError("no matching bank in time")


def test_outputs_health_in_the_bank_then_unknown_when_stale(tmp_path, dbus_address):
    channel = f"whytest-{uuid.uuid4().hex}"
    with running_arbiter(stale_after=3.0, strings=[["p:1"]]) as (arb, _ctx, _states, tap):
        arb.why.health_stale = 2.0  # the publisher heartbeats every 5 s; tests wait less
        config = load(config_file(tmp_path, arb, channel))
        gx = can.Bus(interface="virtual", channel=channel)

        async def scenario() -> None:
            ctx = zmq.asyncio.Context()
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
            sub.connect(tap)
            publisher = Publisher(config, dbus_address=dbus_address)
            task = asyncio.create_task(publisher.run(install_signals=False))
            try:
                bank = await next_bank(sub, lambda b: b["outputs"]["dbus"]["ok"] is True
                                       and b["outputs"]["can"]["ok"] is True)  # fmt: skip
                assert bank["outputs"]["dbus"]["detail"] == f"{NAME} owned"
                assert bank["outputs"]["can"]["detail"].startswith("virtual ")
                assert bank["outputs"]["gx"]["ok"] is False  # nobody sent a keep-alive yet
                assert 0.0 <= bank["outputs"]["dbus"]["age"] < 2.0
                # the GX speaks up: its keep-alive is heard, and the bank says so at once
                for _ in range(30):
                    gx.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
                    await asyncio.sleep(0.1)
                    if publisher.can is not None and publisher.can.listening:
                        break
                bank = await next_bank(sub, lambda b: b["outputs"]["gx"]["ok"] is True)
                assert bank["outputs"]["gx"]["detail"] == "GX keep-alive (0x305/0x307) heard"
                # on change and heartbeat only: a handful over these seconds, not one per bank
                assert publisher.health is not None and publisher.health.sent <= 4
            finally:
                publisher.stop()
                await asyncio.wait_for(task, 5)
            # the publisher is gone: its last report grows old and the outputs become unknown
            bank = await next_bank(sub, lambda b: b["outputs"]["dbus"]["ok"] is None)
            assert all(o["detail"].startswith("unknown: the publisher's last report is")
                       for o in bank["outputs"].values())  # fmt: skip
            assert bank["outputs"]["dbus"]["age"] > 2.0
            sub.close(0)
            ctx.term()

        try:
            asyncio.run(asyncio.wait_for(scenario(), 30))
        finally:
            gx.shutdown()
