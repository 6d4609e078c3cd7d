"""MQTT bridge: the bank and each pack as retained JSON state topics, with Home Assistant discovery.

Read-only: it subscribes to the tap's bank messages (each carries every pack's summary, so the
per-pack states need no state messages) and publishes at most once per ``[mqtt] interval``.
The payloads and Home Assistant discovery configs (with their sources) are in mqtt_ha.py.

paho-mqtt 2 (https://eclipse.dev/paho/files/paho.mqtt.python/html/client.html): ``Client(
CallbackAPIVersion.VERSION2)``, ``will_set``, ``connect_async`` + ``loop_start`` (its thread
retries the first connection too), ``reconnect_delay_set`` for the backoff.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from bmsbank.config import Config, MqttConfig
from bmsbank.mqtt_ha import Topics, bank_discovery, bank_state, pack_discovery, pack_state, slug
from bmsbank.runtime import Heartbeat, hung_after

log = logging.getLogger("bmsbank.mqtt")

PROG = "bmsbank mqtt"
INSTALL_HINT = "paho-mqtt is not installed: pip install 'bmsbank[mqtt]' (or: pip install paho-mqtt)"
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30


def read_password(cfg: MqttConfig) -> str | None:
    """The broker password: ``password``, else the first line of ``password_file``.

    Raises:
        OSError: the password file cannot be read (the message names it).

    """
    if cfg.password_file:
        with open(cfg.password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    return cfg.password or None


class Bridge:
    """Tap bank messages in, MQTT out; the paho client's thread reconnects with backoff."""

    def __init__(self, config: Config, client: Any) -> None:
        self.cfg = config.mqtt
        self.topics = Topics(config.mqtt, config.bank.name)
        self.client = client
        self.malformed = 0
        self.published = 0  #: bank state publications
        self._last_publish = float("-inf")  # monotonic s
        self._announced: set[str] = set()  #: pack ids whose discovery went out this connection
        self._lock = threading.Lock()
        self._connected = False
        self._fresh_connection = False  #: republish discovery and state at once
        self.closing = False  #: our own disconnect: no warning
        self._refused: str | None = None  #: the last refusal logged
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)

    def _on_connect(self, client: Any, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:  # bad credentials...: paho retries; log each new reason once
            if str(reason) != self._refused:
                self._refused = str(reason)
                log.warning("broker %s:%d refused the connection: %s", self.cfg.host,
                            self.cfg.port, reason)  # fmt: skip
            return
        self._refused = None
        log.info("connected to broker %s:%d", self.cfg.host, self.cfg.port)
        client.publish(self.topics.status, "online", qos=1, retain=True)
        for topic, payload in bank_discovery(self.topics):
            client.publish(topic, json.dumps(payload), qos=1, retain=True)
        with self._lock:
            self._connected = True
            self._fresh_connection = True
            self._announced.clear()

    def _on_disconnect(self, _c: Any, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was and not self.closing:  # once per state change; paho retries with backoff
            log.warning("lost broker %s:%d (%s); reconnecting", self.cfg.host, self.cfg.port,
                        reason)  # fmt: skip

    def handle(self, body: bytes, now: float) -> bool:
        """One tap bank message: publish it when due. Returns whether it was published."""
        from bmsbank.errors import MessageError
        from bmsbank.schema import unpack, validate_bank

        with self._lock:
            due = self._fresh_connection or now - self._last_publish >= self.cfg.interval
            if not self._connected or not due:
                return False
        try:
            bank = validate_bank(unpack(body))
        except (MessageError, ValueError, TypeError) as exc:
            self.malformed += 1
            if self.malformed == 1 or self.malformed % 100 == 0:
                log.warning("malformed bank message on the tap (%d so far): %s", self.malformed,
                            exc)  # fmt: skip
            return False
        with self._lock:
            self._fresh_connection = False
            self._last_publish = now
        self.publish(bank)
        return True

    def publish(self, bank: Mapping[str, Any]) -> None:
        """Publish the bank's and every pack's state (and a new pack's discovery), retained."""
        for summary in bank.get("packs", []):
            pack_id = summary["id"]
            if pack_id not in self._announced:
                for topic, payload in pack_discovery(self.topics, pack_id, summary.get("bms")):
                    self.client.publish(topic, json.dumps(payload), qos=1, retain=True)
                self._announced.add(pack_id)
            state = json.dumps(pack_state(summary))
            self.client.publish(self.topics.pack(pack_id), state, retain=True)
        state = json.dumps(bank_state(bank, self.malformed))
        self.client.publish(self.topics.bank, state, retain=True)
        self.published += 1

    def count_malformed(self) -> None:
        """A tap message that is not even a (topic, body) pair."""
        self.malformed += 1


def make_client(cfg: MqttConfig, bank_name: str) -> Any:
    """A paho client for ``cfg`` (raises ImportError when paho-mqtt is missing)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bmsbank-{slug(bank_name)}")
    if cfg.username:
        client.username_pw_set(cfg.username, read_password(cfg))
    if cfg.tls:
        client.tls_set()  # the system's CA certificates
    return client


def run(config: Config, tap: str, stop: Callable[[], bool]) -> int:
    """Bridge until ``stop()``: idle in zmq poll between bank messages (1 s ticks)."""
    import zmq

    from bmsbank.schema import TOPIC_BANK

    client = make_client(config.mqtt, config.bank.name)
    bridge = Bridge(config, client)
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100)  # bounded: only the newest bank matters
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
    sock.connect(tap)
    client.connect_async(config.mqtt.host, config.mqtt.port, keepalive=30)
    client.loop_start()
    log.info("bridging the tap %s to mqtt://%s:%d", tap, config.mqtt.host, config.mqtt.port)
    # the watchdog kills a hung loop; the paho thread is not the loop, so beat from here
    heartbeat = Heartbeat.supervised(config.runtime_dir)
    allowance = hung_after(config.bank.stale_after, config.bank.interval)
    try:
        while not stop():
            heartbeat.beat_every(1.0, allowance)
            if not sock.poll(1000):
                continue
            parts = sock.recv_multipart()
            if len(parts) != 2:
                bridge.count_malformed()
                continue
            bridge.handle(parts[1], time.monotonic())
    finally:
        bridge.closing = True
        client.publish(bridge.topics.status, "offline", qos=1, retain=True).wait_for_publish(2)
        client.disconnect()
        client.loop_stop()
        sock.close()
        heartbeat.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bmsbank.mqtt`` (supervisord's command): run the bridge; 2 = start-up error."""
    p = argparse.ArgumentParser(prog=PROG, description="Publish the bank to an MQTT broker.")
    add_arguments(p)
    args = p.parse_args(argv)
    return cmd_mqtt(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bridge's command-line arguments."""
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="runtime directory (overrides the config)")
    p.add_argument("--tap", help="tap endpoint (overrides the config)")


def cmd_mqtt(args: argparse.Namespace) -> int:
    """Run the bridge for ``args`` (config, runtime dir, tap)."""
    from bmsbank import config as configuration
    from bmsbank import runtime
    from bmsbank.errors import ConfigError

    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return runtime.fail(PROG, INSTALL_HINT, 2)
    try:
        config = configuration.load(args.config, args.runtime_dir)
        if config.mqtt.password_file:
            read_password(config.mqtt)
    except ConfigError as exc:
        return runtime.fail(PROG, exc, 2)
    except OSError as exc:
        return runtime.fail(PROG, f"mqtt.password_file: {exc}", 2)
    if not config.mqtt.enabled:
        return runtime.fail(PROG, f"[mqtt] enabled is false in {config.source}", 2)
    logging.basicConfig(level=config.log_level.upper(), format="%(name)s: %(message)s")
    runtime.exit_on_stop_signals()
    try:
        return run(config, args.tap or config.tap_endpoint, lambda: False)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
