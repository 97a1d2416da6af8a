"""A scripted OpenAI-compatible server for faults a real vLLM cannot produce on demand.

It speaks enough of vLLM's API for ``perfgate bench`` (``/v1/models``, ``/version``,
``/tokenize``, ``/detokenize``, ``/metrics``, streaming ``/v1/completions`` with per-chunk
usage) with a word-level tokenizer, and misbehaves as told: HTTP 500 or 429, a malformed SSE
line, a connection dropped mid-stream, a stream that stalls (or sends keepalives instead of a
first token, or trickles its tokens), no ``/metrics``, usage that
disagrees with the tokens sent, or a ``/health`` that never answers 200. Never proof that a
feature works (the e2e tests against real vLLM are); proof that perfgate handles the fault.

In-process: ``with FakeServer(mode="http500") as url: ...`` (a thread with its own event
loop). As a program (a stand-in ``vllm`` executable for server-lifecycle faults):
``python -m tests.fake_server --mode never_healthy --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
from typing import Any

from aiohttp import web

MODES = (
    "ok",
    "http500",
    "http429",
    "malformed",
    "bad_event_once",
    "drop",
    "stall",
    "keepalive",
    "late_first",
    "trickle",
    "no_metrics",
    "wrong_usage",
    "never_healthy",
    "models_not_json",
    "version_not_json",
    "metrics_not_utf8",
    "tokenize_odd",
)


class _Vocab:
    """Words <-> ids, ids assigned as words are first seen (ids 1..; 0 is BOS)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: dict[int, str] = {}

    def encode(self, text: str) -> list[int]:
        out = []
        for w in text.split():
            if w not in self.ids:
                self.ids[w] = len(self.ids) + 1
                self.words[self.ids[w]] = w
            out.append(self.ids[w])
        return out

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words.get(i, f"w{i}") for i in ids)


def make_app(mode: str, stall_s: float = 30.0) -> web.Application:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    vocab = _Vocab()
    served = {"requests": 0, "tokens": 0, "posts": 0}

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=503 if mode == "never_healthy" else 200)

    async def models(_: web.Request) -> web.Response:
        if mode == "models_not_json":
            return web.Response(text="<html>proxy error</html>")
        return web.json_response(
            {"data": [{"id": "fake", "root": "/models/fake", "max_model_len": 4096}]}
        )

    async def version(_: web.Request) -> web.Response:
        if mode == "version_not_json":
            return web.Response(body=b"\xff\xfe not json")
        return web.json_response({"version": "fake-0"})

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            ids = [0, 0, *vocab.encode(body["messages"][0]["content"]), 0]
        else:
            ids = vocab.encode(body["prompt"])
            if body.get("add_special_tokens"):
                ids = [0, *ids]
        if mode == "tokenize_odd":
            return web.json_response({"tokens": "abc", "count": "many"})
        return web.json_response({"tokens": ids, "count": len(ids)})

    async def detokenize(request: web.Request) -> web.Response:
        return web.json_response({"prompt": vocab.decode((await request.json())["tokens"])})

    async def metrics(_: web.Request) -> web.Response:
        if mode == "no_metrics":
            return web.Response(status=404)
        text = (
            f'vllm:generation_tokens_total{{model_name="fake"}} {served["tokens"]}.0\n'
            f'vllm:request_success_total{{model_name="fake"}} {served["requests"]}.0\n'
        )
        if mode == "metrics_not_utf8":
            return web.Response(body=text.encode() + b"# \xff\xfe stray bytes\n")
        return web.Response(text=text)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if mode == "http500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if mode == "http429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429)
        prompt_tokens = len(vocab.encode(body["prompt"])) + 1
        n = int(body["max_tokens"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        served["posts"] += 1
        post = served["posts"]  # this request's number, in arrival order
        for i in range(1, n + 1):
            if mode == "bad_event_once" and post == 20 and i == 2:
                await resp.write(b'data: {"choices": [1]}\n\n')  # JSON, but not an event
                continue
            if mode == "malformed" and i == 2:
                await resp.write(b"data: {not json\n\n")
                return resp
            if mode == "drop" and i == 2:
                assert request.transport is not None
                request.transport.close()
                return resp
            if mode == "keepalive" and i == 2:  # bytes keep coming, tokens do not
                for _ in range(int(stall_s / 0.2)):
                    await resp.write(b": keepalive\n\n")
                    await asyncio.sleep(0.2)
            if mode == "stall" and i == 2:
                await asyncio.sleep(stall_s)
            if mode == "late_first" and i == 1:  # bytes keep coming, the first token does not
                for _ in range(int(stall_s / 0.2)):
                    await resp.write(b": keepalive\n\n")
                    await asyncio.sleep(0.2)
            if mode == "trickle" and i > 1:  # tokens keep coming, too slowly to finish in time
                await asyncio.sleep(0.3)
            reported = i + 1 if mode == "wrong_usage" and i == n else i
            chunk = {
                "choices": [{"index": 0, "text": f" t{i}"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": reported},
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.001)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": reported}
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        served["requests"] += 1
        served["tokens"] += n
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/version", version)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", completions)
    return app


class FakeServer:
    """``with FakeServer(mode) as url:`` serves on 127.0.0.1 from a thread of its own."""

    def __init__(self, mode: str = "ok", stall_s: float = 30.0) -> None:
        self.app = make_app(mode, stall_s)
        self.loop = asyncio.new_event_loop()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self.url

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: Any) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def main() -> None:
    """Stand-in for ``vllm serve MODEL --host H --port P ...`` (unknown arguments ignored)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    web.run_app(make_app(args.mode), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
