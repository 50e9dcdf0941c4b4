"""The dataflow's heartbeat: how each `meterwatch run` process is doing, kept in Redis where
the API's /ready reads it.

Each process writes one small key, `<reads stream>:pipeline:<host>:<pid>`, every couple of
seconds while it works and whenever its state changes, with a time to live, and lists itself in
the set `<reads stream>:pipelines`. A process that died disappears when its key expires.

States: `ok`; `waiting_for_database` (the sink retries with backoff; written to Redis, which is
still there); `waiting_for_redis` (the source retries; nothing can be written to Redis then,
so the API sees Redis itself unreachable). The heartbeat lives in Redis rather than the
database because the database is what the sink is waiting for when it matters most.

>>> health = PipelineHealth(None, "meterwatch:reads")
>>> health.degraded("waiting_for_database", "connection refused")
>>> health.state, health.detail
('waiting_for_database', 'connection refused')
>>> health.ok()
>>> health.state
'ok'
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

# How often a working process refreshes its key (seconds), and how long the key outlives the
# last refresh (seconds): a process silent for longer is gone.
BEAT_S = 2.0
TTL_S = 30


def members_key(stream: str) -> str:
    """The set of the processes that report on `stream`."""
    return f"{stream}:pipelines"


def process_key(stream: str, process: str) -> str:
    return f"{stream}:pipeline:{process}"


class PipelineHealth:
    """One process's heartbeat. Safe to call from the source and the sink of any worker; a
    failure to write it is logged once and never stops the dataflow."""

    def __init__(self, redis_url: str | None, stream: str) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.state = "ok"
        self.detail = ""
        self.since = time.time()
        self._written_at = 0.0
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._failing = False

    def beat(self) -> None:
        """Refresh the key, at most every BEAT_S seconds."""
        if time.monotonic() - self._written_at >= BEAT_S:
            self._write()

    def degraded(self, state: str, detail: str) -> None:
        """The process is waiting for something (`state`), and why (`detail`)."""
        if state != self.state:
            self.since = time.time()
        self.state, self.detail = state, detail
        self._write()

    def ok(self) -> None:
        """The process works again."""
        if self.state == "ok":
            return
        log.info("%s is over after %.1fs", self.state, time.time() - self.since)
        self.state, self.detail, self.since = "ok", "", time.time()
        self._write()

    def as_dict(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "state": self.state,
            "detail": self.detail,
            "since": self.since,
            "beat": time.time(),
        }

    def _write(self) -> None:
        if self.redis_url is None:
            return
        with self._lock:
            self._written_at = time.monotonic()
            try:
                if self._client is None:
                    self._client = redis.Redis.from_url(
                        self.redis_url, socket_timeout=1, socket_connect_timeout=1
                    )
                pipe = self._client.pipeline(transaction=False)
                pipe.set(
                    process_key(self.stream, self.process), json.dumps(self.as_dict()), ex=TTL_S
                )
                pipe.sadd(members_key(self.stream), self.process)
                pipe.execute()
                self._failing = False
            except redis.RedisError as exc:
                if not self._failing:
                    log.warning("could not write the dataflow's heartbeat to Redis: %s", exc)
                self._failing = True
                self._client = None


def read_heartbeats(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    """The live heartbeats of the processes reporting on `stream` (forgetting those whose key
    expired: their process is gone)."""
    members = sorted(_text(m) for m in client.smembers(members_key(stream)))
    if not members:
        return []
    values = client.mget([process_key(stream, m) for m in members])
    beats = []
    gone = []
    for member, value in zip(members, values, strict=True):
        if value is None:
            gone.append(member)
            continue
        try:
            beats.append(json.loads(value))
        except ValueError:
            gone.append(member)
    if gone:
        client.srem(members_key(stream), *gone)
    return beats


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_current: PipelineHealth | None = None


def configure(redis_url: str | None, stream: str) -> PipelineHealth:
    """Make this process report its health on `stream` (the runner does, for the stream flow)."""
    global _current
    _current = PipelineHealth(redis_url, stream)
    return _current


def current() -> PipelineHealth:
    """This process's heartbeat (one that writes nowhere until `configure` was called)."""
    global _current
    if _current is None:
        _current = PipelineHealth(None, "")
    return _current
