"""``bmsbank web``: a small HTTP server (asyncio streams, standard library) for the bank view.

Routes (GET only: the page is read-only): ``/`` the page, ``/app.js`` its script, ``/events``
Server-Sent Events (``bank`` about 1 Hz, ``states`` at most 1 Hz), ``/history.json?span=24h|7d``
and ``/history.csv?span=...`` the stored points, ``/events.json`` the limit-change log. With a
token configured every request must carry ``?token=...`` (the page passes it on).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bmsbank.config import Config
from bmsbank.runtime import STOP_SIGNALS
from bmsbank.web.feed import Feed, json_safe
from bmsbank.web.history import TIERS, History, csv_text

log = logging.getLogger(__name__)

MAX_REQUEST = 8192  #: [bytes] of request line and headers; more is refused
KEEPALIVE = 15.0  #: [s] between SSE comments that keep idle connections open
MAX_STREAMS = 16  #: browsers served live at once (each costs a queue and a JSON copy per bank)


def _static(name: str) -> bytes:
    return resources.files("bmsbank.web").joinpath(name).read_bytes()


def _response(status: str, ctype: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class WebServer:
    """The page, its event stream and the history, for one config."""

    def __init__(self, config: Config) -> None:
        web = config.web
        path = f"{web.history_dir}/history.sqlite3" if web.history_dir else ""
        self.history = History(path, int(web.history_max_mb * 1024 * 1024))
        self.feed = Feed(config.tap_endpoint, self.history)
        self.token = web.token
        self.listen, self.port = web.listen, web.port
        self.pages = {"/": ("text/html; charset=utf-8", _static("page.html")),
                      "/app.js": ("text/javascript; charset=utf-8", _static("app.js"))}  # fmt: skip

    async def serve(self) -> None:
        """Serve until a stop signal (SIGTERM, SIGINT, SIGHUP); then write the history and stop.

        The signals are the loop's (``add_signal_handler``): a handler that raised SystemExit
        would land inside whatever callback runs, a browser's write for one.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        server = await asyncio.start_server(self._client, self.listen, self.port)
        log.info("serving the bank view on http://%s:%d/", self.listen, self.port)
        feed = asyncio.create_task(self.feed.run())
        try:
            await stop.wait()
        finally:
            server.close()
            self.feed.end_streams()
            await asyncio.sleep(0.1)  # the streams' writers return and close their sockets
            feed.cancel()
            self.feed.close()
            self.history.close()
            log.info("stopped; history written")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            if len(head) > MAX_REQUEST:
                raise ValueError("request too long")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            await self._route(method, target, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except (ValueError, UnicodeDecodeError):
            writer.write(_response("400 Bad Request", "text/plain", b"bad request\n"))
        except ConnectionError:
            pass
        finally:
            try:
                await writer.drain()
                writer.close()
            except ConnectionError:
                pass

    async def _route(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if method != "GET":
            writer.write(_response("405 Method Not Allowed", "text/plain", b"read-only\n",
                                   "Allow: GET\r\n"))  # fmt: skip
        elif self.token and not hmac.compare_digest(query.get("token", ""), self.token):
            writer.write(_response("403 Forbidden", "text/plain", b"token required\n"))
        elif url.path in self.pages:
            ctype, body = self.pages[url.path]
            writer.write(_response("200 OK", ctype, body))
        elif url.path == "/events" and len(self.feed.clients) >= MAX_STREAMS:
            writer.write(_response("503 Service Unavailable", "text/plain", b"too many viewers\n",
                                   "Retry-After: 10\r\n"))  # fmt: skip
        elif url.path == "/events":
            await self._events(writer)
        elif url.path in ("/history.json", "/history.csv", "/events.json"):
            writer.write(self._data(url.path, query))
        else:
            writer.write(_response("404 Not Found", "text/plain", b"not found\n"))

    def _data(self, path: str, query: dict[str, str]) -> bytes:
        if path == "/events.json":
            return _json(self.history.events())
        span = query.get("span", "24h")
        if span not in TIERS:
            return _response("400 Bad Request", "text/plain", b"span: 24h or 7d\n")
        points = self.history.points(span)
        if path.endswith(".csv"):
            extra = f'Content-Disposition: attachment; filename="bmsbank-{span}.csv"\r\n'
            return _response("200 OK", "text/csv; charset=utf-8", csv_text(points).encode(), extra)
        return _json(points)

    async def _events(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
            b"Connection: close\r\n\r\nretry: 2000\n\n"
        )
        q = self.feed.add_client()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(q.get(), KEEPALIVE)
                except TimeoutError:
                    data = b": keep-alive\n\n"
                if data is None:
                    return
                writer.write(data)
                await writer.drain()
        finally:
            self.feed.remove_client(q)


def _json(data: Any) -> bytes:
    body = json.dumps(json_safe(data), separators=(",", ":")).encode()
    return _response("200 OK", "application/json", body)
