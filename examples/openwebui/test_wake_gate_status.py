"""Tests of the wake gate status filter against a stub gate on 127.0.0.1 and a
stub emitter. Standard library only (plus pydantic for the Valves):

    /usr/bin/python3 -m unittest discover -s examples/openwebui -v
"""

import asyncio
import copy
import http.server
import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wake_gate_status  # noqa: E402


def status(state, models=("m:8b",), hold=300, name="default", loading=None):
    return {
        "loading": list(loading or []),
        "warm": [],
        "name": name,
        "prefix": "/",
        "state": state,
        "since": "2026-12-02T20:00:00Z",
        "waiting_seconds": 0,
        "held": 0,
        "in_flight": 0,
        "hold_timeout_seconds": hold,
        "models": list(models),
        "reason": "connection refused",
    }


class StubGate:
    """Answers GET /_gate/status with the next of its scripted answers (the
    last one repeats). An answer is a dict (sent as JSON), bytes (sent
    as is), or a number (seconds to sleep before answering the next)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = 0
        self.paths = []
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                gate.paths.append(self.path)
                i = min(gate.requests, len(gate.script) - 1)
                gate.requests += 1
                answer = gate.script[i]
                if isinstance(answer, (int, float)):
                    time.sleep(answer)
                    answer = gate.script[-1] if i + 1 >= len(gate.script) else gate.script[i + 1]
                raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the filter gave up on a slow answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:%d" % s.getsockname()[1]


class Emitter:
    def __init__(self, fail=False):
        self.events = []
        self.fail = fail

    async def __call__(self, event):
        self.events.append(event)
        if self.fail:
            raise RuntimeError("the socket went away")


def run_inlet(gate_url, body, emitter, model=None, **valves):
    f = wake_gate_status.Filter()
    f.valves = f.Valves(**{"gate_url": gate_url, "poll_interval_seconds": 0.05, "timeout_seconds": 0.5, **valves})
    started = time.monotonic()
    out = asyncio.run(f.inlet(body, __event_emitter__=emitter, __model__=model))
    return out, time.monotonic() - started


WAKING = "Waking the GPU server \u2026 ("


class InletTest(unittest.TestCase):
    def setUp(self):
        self.body = {"model": "m:8b", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        self.want_body = copy.deepcopy(self.body)

    def assert_body_unchanged(self, out):
        self.assertIs(out, self.body)
        self.assertEqual(out, self.want_body)

    def test_states(self):
        # What the user sees for each scripted gate; generous bounds on time
        # only say the wait stops by itself.
        cases = [
            ("asleep, starting, up", [{"backends": [status("asleep")]}] * 2 + [{"backends": [status("starting")]}] * 2 + [{"backends": [status("up")]}], "up", 4),
            ("up at once", [{"backends": [status("up")]}], None, 0),
            ("unknown", [{"backends": [status("unknown")]}], None, 0),
            ("garbage JSON", [b'{"backends": [{"state": "asl'], None, 0),
            ("not an object", [b"[1, 2]"], None, 0),
            ("no backends", [{"backends": []}], None, 0),
            ("backends not a list", [{"backends": "asleep"}], None, 0),
            ("state vanishes mid-wait", [{"backends": [status("asleep")]}, b"garbage"], "gave up", 1),
        ]
        for name, script, want_end, want_waking in cases:
            with self.subTest(name):
                gate = StubGate(script)
                self.addCleanup(gate.close)
                emitter = Emitter()
                out, elapsed = run_inlet(gate.url, self.body, emitter)
                self.assert_body_unchanged(out)
                self.assertLess(elapsed, 10, "the wait must stop by itself")
                self.assertEqual(gate.paths[0], "/_gate/status")
                waking = [e for e in emitter.events if not e["data"]["done"]]
                self.assertEqual(len(waking), want_waking, emitter.events)
                for e in waking:
                    self.assertEqual(e["type"], "status")
                    self.assertTrue(e["data"]["description"].startswith(WAKING), e)
                    self.assertRegex(e["data"]["description"], r"\(\d+ s\)$")
                done = [e for e in emitter.events if e["data"]["done"]]
                if want_end is None:
                    self.assertEqual(emitter.events, [])
                    continue
                self.assertEqual(len(done), 1, emitter.events)
                self.assertIs(emitter.events[-1], done[0], "done is the last event")
                if want_end == "up":
                    self.assertEqual(done[0]["data"]["description"], "GPU server is up")
                else:
                    self.assertTrue(done[0]["data"]["description"].startswith("GPU server not up after"), done)

    def test_loading_the_model(self):
        # While the message's model loads (the gate's warm-up, or a request's
        # load), the line says so with the gate's seconds; another model's
        # load is not this message's business.
        def loading(model, seconds, by="warm-up"):
            return [{"model": model, "seconds": seconds, "by": by}]

        cases = [
            (
                "woken, then its model loads",
                [{"backends": [status("asleep")]}, {"backends": [status("up", loading=loading("m:8b", 1.5))]},
                 {"backends": [status("up", loading=loading("m:8b", 12.2))]}, {"backends": [status("up")]}],
                ["Waking the GPU server \u2026 (0 s)", "loading m:8b \u2026 (1 s)", "loading m:8b \u2026 (12 s)"],
                "GPU server is up",
            ),
            (
                "up, its model loading",
                [{"backends": [status("up", loading=loading("m:8b", 3, "request"))]}, {"backends": [status("up")]}],
                ["loading m:8b \u2026 (3 s)"],
                "Model loaded",
            ),
            (
                "up, another model loading",
                [{"backends": [status("up", loading=loading("other:70b", 3))]}],
                [],
                None,
            ),
            (
                "a prefixed model id",
                [{"backends": [status("up", loading=loading("m:8b", 2))]}, {"backends": [status("up")]}],
                ["loading m:8b \u2026 (2 s)"],
                "Model loaded",
            ),
            (
                "NAME:latest is NAME",
                [{"backends": [status("up", loading=loading("tiny", 4))]}, {"backends": [status("up")]}],
                ["loading tiny \u2026 (4 s)"],
                "Model loaded",
            ),
            (
                "garbage in loading",
                [{"backends": [status("up", loading=[{"model": 3}, "x", {"model": "m:8b", "seconds": "soon"}])]}, {"backends": [status("up")]}],
                ["loading m:8b \u2026 (0 s)"],
                "Model loaded",
            ),
        ]
        for name, script, want_lines, want_end in cases:
            with self.subTest(name):
                gate = StubGate(script)
                self.addCleanup(gate.close)
                emitter = Emitter()
                body = self.body
                if name == "a prefixed model id":
                    body = {"model": "work.m:8b", "messages": []}
                if name == "NAME:latest is NAME":
                    body = {"model": "tiny:latest", "messages": []}
                out, elapsed = run_inlet(gate.url, body, emitter)
                self.assertIs(out, body)
                self.assertLess(elapsed, 10, "the wait must stop by itself")
                lines = [e["data"]["description"] for e in emitter.events if not e["data"]["done"]]
                self.assertEqual(lines, want_lines)
                done = [e["data"]["description"] for e in emitter.events if e["data"]["done"]]
                self.assertEqual(done, [want_end] if want_end else [])

    def test_unreachable_gate_lets_the_message_go_at_once(self):
        emitter = Emitter()
        out, elapsed = run_inlet(closed_port_url(), self.body, emitter)
        self.assert_body_unchanged(out)
        self.assertEqual(emitter.events, [])
        self.assertLess(elapsed, 5)

    def test_slow_gate_lets_the_message_go_after_one_timeout(self):
        gate = StubGate([3, {"backends": [status("asleep")]}])
        self.addCleanup(gate.close)
        emitter = Emitter()
        out, elapsed = run_inlet(gate.url, self.body, emitter, timeout_seconds=0.2)
        self.assert_body_unchanged(out)
        self.assertEqual(emitter.events, [])
        self.assertLess(elapsed, 2.5, "one status request is bounded by timeout_seconds, not by the gate")

    def test_wait_is_bounded_by_the_hold_timeout_and_the_valve(self):
        cases = [
            ("the gate's hold timeout", 0.6, 30.0),
            ("max_wait_seconds", 300, 0.6),
        ]
        for name, hold, max_wait in cases:
            with self.subTest(name):
                gate = StubGate([{"backends": [status("asleep", hold=hold)]}])
                self.addCleanup(gate.close)
                emitter = Emitter()
                out, elapsed = run_inlet(gate.url, self.body, emitter, max_wait_seconds=max_wait)
                self.assert_body_unchanged(out)
                self.assertGreaterEqual(elapsed, 0.6)
                self.assertLess(elapsed, 0.6 + 5, "waited past the bound")
                self.assertTrue(emitter.events[-1]["data"]["done"])
                self.assertTrue(emitter.events[-1]["data"]["description"].startswith("GPU server not up after"))

    def test_emitter_that_fails_never_fails_the_message(self):
        gate = StubGate([{"backends": [status("asleep")]}])
        self.addCleanup(gate.close)
        emitter = Emitter(fail=True)
        out, _ = run_inlet(gate.url, self.body, emitter)
        self.assert_body_unchanged(out)
        self.assertEqual(len(emitter.events), 1)

    def test_no_emitter(self):
        out, _ = run_inlet(closed_port_url(), self.body, None)
        self.assert_body_unchanged(out)

    def test_the_backend_of_the_model_is_watched(self):
        two = {"backends": [status("up", models=["small:1b"], name="cpu"), status("asleep", models=["m:8b"], name="gpu")]}
        cases = [
            ("model on the sleeping backend", "m:8b", None, 1),
            ("with Open WebUI's prefix_id", "gpu.m:8b", None, 1),
            ("model on the backend that is up", "small:1b", None, 0),
            ("unknown model, two backends", "other", None, 0),
            ("workspace model on the sleeping base model", "my-assistant", {"id": "my-assistant", "info": {"base_model_id": "m:8b"}}, 1),
        ]
        for name, model, model_info, want_waking in cases:
            with self.subTest(name):
                gate = StubGate([two, two, {"backends": [status("up", models=["small:1b"], name="cpu"), status("up", name="gpu")]}])
                self.addCleanup(gate.close)
                emitter = Emitter()
                body = {"model": model, "messages": []}
                out, _ = run_inlet(gate.url, body, emitter, model=model_info)
                self.assertIs(out, body)
                waking = [e for e in emitter.events if not e["data"]["done"]]
                self.assertGreaterEqual(len(waking), want_waking, emitter.events)
                if want_waking == 0:
                    self.assertEqual(emitter.events, [])
                else:
                    self.assertEqual(emitter.events[-1]["data"], {"description": "GPU server is up", "done": True})


class PickBackendTest(unittest.TestCase):
    def test_pick(self):
        a = status("up", models=["llama3.1:8b"], name="a")
        b = status("asleep", models=["qwen3:4b"], name="b")
        cases = [
            ("exact", {"backends": [a, b]}, ["qwen3:4b"], b),
            ("a dotted name is not taken for a prefix", {"backends": [a, b]}, ["llama3.1:8b"], a),
            ("prefix_id", {"backends": [a, b]}, ["ollama-gpu.qwen3:4b"], b),
            ("one backend serves every model", {"backends": [b]}, ["anything"], b),
            ("none of two", {"backends": [a, b]}, ["anything"], None),
            ("models null", {"backends": [dict(a, models=None), b]}, ["qwen3:4b"], b),
            ("not a status", "asleep", ["qwen3:4b"], None),
            ("no name", {"backends": [a, b]}, [], None),
        ]
        for name, st, names, want in cases:
            with self.subTest(name):
                self.assertIs(wake_gate_status.pick_backend(st, names), want)


if __name__ == "__main__":
    unittest.main()
