"""
title: Wake gate status
description: While the GPU server behind the openwebui_exporter wake gate is asleep or starting, shows "Waking the GPU server … (N s)" on the answer, "loading MODEL … (N s)" while the message's model is being loaded, and "GPU server is up" once it serves. Never fails a message.
version: 0.2.0
license: Apache-2.0
"""

# An Open WebUI Function filter (install it global, it has no toggle). Its
# inlet asks the wake gate (GET <gate>/_gate/status) for the state of the
# backend that serves the message's model and, while that backend is asleep
# or starting, polls once per poll interval and shows the seconds waited.
#
# Once the backend is up, the gate's status also lists the models it is
# loading (its own warm-up, or a request's load; docs/warming.md): while the
# message's model is among them, the filter shows "loading MODEL … (N s)",
# N the seconds the load has taken so far. The message would wait for that
# load anyway (Ollama loads one model at a time).
#
# It only shows what happens anyway: the gate holds the request until the
# backend is up, so the filter never waits longer than the gate would hold it
# (hold_timeout_seconds from the status, capped by max_wait_seconds). Every
# error is swallowed and the message goes on unchanged: a status line is not
# worth a failed message. Standard library only for HTTP, so it runs in any
# Open WebUI image.

import asyncio
import json
import time
import urllib.request

from pydantic import BaseModel, Field

WAITING_STATES = ("asleep", "starting")
MAX_STATUS_BYTES = 1 << 20


class Filter:
    class Valves(BaseModel):
        gate_url: str = Field(
            default="http://openwebui-exporter:11434",
            description="The wake gate (the URL Open WebUI uses for Ollama); the filter asks <gate_url>/_gate/status.",
        )
        max_wait_seconds: float = Field(
            default=600.0,
            description="Longest the filter shows the status line; the gate's own hold timeout caps it too.",
        )
        poll_interval_seconds: float = Field(
            default=1.0, description="How often the filter asks the gate while the GPU server wakes."
        )
        timeout_seconds: float = Field(
            default=1.0,
            description="Timeout of one status request: a gate that does not answer within it lets the message go on at once.",
        )

    def __init__(self):
        self.valves = self.Valves()

    async def inlet(self, body: dict, __event_emitter__=None, __model__=None) -> dict:
        if __event_emitter__ is None:
            return body
        try:
            await self._show_wake_up(body, __event_emitter__, __model__)
        except Exception:
            # Anything at all (the gate, its JSON, the emitter): the message
            # goes on; the gate still holds it until the backend is up.
            pass
        return body

    async def _show_wake_up(self, body, emit, model_info):
        started = time.monotonic()
        names = model_names(body, model_info)
        status = await self._status()
        backend = pick_backend(status, names)
        if backend is None:
            return
        if backend.get("state") not in WAITING_STATES and loading_of(backend, names) is None:
            return
        woke = backend.get("state") in WAITING_STATES
        name = backend.get("name")
        limit = float(self.valves.max_wait_seconds)
        hold = backend.get("hold_timeout_seconds")
        if isinstance(hold, (int, float)) and not isinstance(hold, bool) and hold > 0:
            limit = min(limit, float(hold))
        poll = max(float(self.valves.poll_interval_seconds), 0.05)
        loading = None  # the model whose load was shown last

        while True:
            waited = time.monotonic() - started
            state = backend.get("state") if backend else None
            load = loading_of(backend, names) if state == "up" else None
            if state == "up" and load is None:
                done = "GPU server is up" if woke else "Model loaded"
                await emit({"type": "status", "data": {"description": done, "done": True}})
                return
            if (state not in WAITING_STATES and load is None) or waited >= limit:
                break
            if load is not None:
                loading, seconds = load
                line = f"loading {loading} \u2026 ({int(seconds)} s)"
            else:
                loading = None
                line = f"Waking the GPU server \u2026 ({int(waited)} s)"
            await emit({"type": "status", "data": {"description": line, "done": False}})
            await asyncio.sleep(min(poll, max(limit - waited, 0)))
            backend = backend_named(await self._status(), name)
        # Gave up showing it (the gate unreachable, the hold timeout): close
        # the status line; the message goes on and the gate answers it.
        what = f"{loading} not loaded" if loading else "GPU server not up"
        await emit(
            {
                "type": "status",
                "data": {"description": f"{what} after {int(time.monotonic() - started)} s", "done": True},
            }
        )

    async def _status(self):
        """The gate's status as a dict, or None if it cannot be had."""
        timeout = max(float(self.valves.timeout_seconds), 0.05)
        url = self.valves.gate_url.rstrip("/") + "/_gate/status"
        try:
            # wait_for bounds the whole request (urllib's timeout is per
            # socket operation); the thread ends by its own timeout.
            return await asyncio.wait_for(asyncio.to_thread(fetch_status, url, timeout), timeout)
        except Exception:
            return None


def fetch_status(url, timeout):
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = json.loads(resp.read(MAX_STATUS_BYTES))
    return status if isinstance(status, dict) else None


def model_names(body, model_info):
    """The names the message's model may have on the backend: the id Open
    WebUI uses, and the base model of a workspace model."""
    names = []
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        names.append(body["model"])
    if isinstance(model_info, dict):
        info = model_info.get("info")
        if isinstance(info, dict) and isinstance(info.get("base_model_id"), str):
            names.append(info["base_model_id"])
    return names


def backends_of(status):
    if not isinstance(status, dict) or not isinstance(status.get("backends"), list):
        return []
    return [b for b in status["backends"] if isinstance(b, dict)]


def pick_backend(status, names):
    """The backend whose models list has one of names, also with the
    "<prefix_id>." that Open WebUI puts before the models of a connection
    that has a prefix ID; with one backend, that one; else None."""
    backends = backends_of(status)

    def models(b):
        return [m for m in (b.get("models") or []) if isinstance(m, str)]

    for n in names:
        for b in backends:
            if n in models(b):
                return b
    for n in names:
        for b in backends:
            if any(n.endswith("." + m) for m in models(b)):
                return b
    return backends[0] if len(backends) == 1 else None


def loading_of(backend, names):
    """(model, seconds) of the first model the backend is loading that is
    one of names (also after a "<prefix_id>."), or None."""
    if not isinstance(backend, dict) or not isinstance(backend.get("loading"), list):
        return None
    for entry in backend["loading"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            continue
        model, seconds = entry["model"], entry.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            seconds = 0
        # The gate names NAME:latest as NAME (one model to Ollama).
        key = strip_latest(model)
        if any(strip_latest(n) == key or strip_latest(n).endswith("." + key) for n in names):
            return model, seconds
    return None


def strip_latest(name):
    return name[: -len(":latest")] if name.endswith(":latest") else name


def backend_named(status, name):
    for b in backends_of(status):
        if b.get("name") == name:
            return b
    return None
