"""What perfgate asks a running OpenAI-compatible (vLLM) server besides generating text.

Model list and context length (``/v1/models``), version (``/version``), tokenizer round trips
(``/tokenize``, ``/detokenize``) and the Prometheus text of ``/metrics``. Every failure becomes an
``EndpointError`` whose message names the URL and what to do about it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from perfgate.documents.bench import ServerInfo


class EndpointError(Exception):
    """The server could not be used; the message says why and what to do."""


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _json_of(resp: aiohttp.ClientResponse, what: str) -> Any:
    """The reply's JSON; EndpointError naming the endpoint when it is not JSON (or not text)."""
    raw = await resp.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested
        shown = raw[:120].decode("utf-8", "replace")
        raise EndpointError(
            f"{what} answered with something that is not JSON ({shown!r}); is this a vLLM "
            "(OpenAI-compatible) server?"
        ) from None


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    return (await resp.read())[:300].decode("utf-8", "replace").strip()


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise EndpointError(
                    f"GET {url} answered HTTP {resp.status}: {await _error_text(resp)}"
                )
            return await _json_of(resp, f"GET {url}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EndpointError(
            f"cannot reach {url} ({_short(exc)}); is the server running and is --url right?"
        ) from exc


async def post_json(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                raise EndpointError(
                    f"POST {url} answered HTTP {resp.status}: {await _error_text(resp)}"
                )
            return await _json_of(resp, f"POST {url}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EndpointError(f"cannot reach {url} ({_short(exc)})") from exc


def _field(doc: Any, key: str, kind: type, what: str) -> Any:
    """``doc[key]`` checked to be a ``kind``; EndpointError naming the endpoint otherwise."""
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EndpointError(
            f"{what} answered without a {kind.__name__} {key!r} ({str(doc)[:120]!r}); is this "
            "a vLLM server? perfgate counts tokens with vLLM's /tokenize and /detokenize"
        )
    return value


async def probe(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str | None,
    model_field: str = "--served-model",
) -> ServerInfo:
    """Check the server answers and serves ``model`` (default: the first it lists).
    ``model_field`` is where the user set the name (a flag, or a scenario field)."""
    base = base_url.rstrip("/")
    listing = await get_json(session, f"{base}/v1/models")
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list) or not data:
        raise EndpointError(
            f"{base}/v1/models lists no models; is this an OpenAI-compatible server?"
        )
    ids = tuple(str(m.get("id")) for m in data if isinstance(m, dict))
    chosen = model or ids[0]
    if chosen not in ids:
        raise EndpointError(
            f"{model_field} {chosen!r} is not served at {base}; it serves {', '.join(ids)} "
            f"(set {model_field} to one of those, or leave it out to use the first)"
        )
    entry = next(m for m in data if isinstance(m, dict) and str(m.get("id")) == chosen)
    max_len = entry.get("max_model_len")
    root = entry.get("root")
    try:
        version_doc = await get_json(session, f"{base}/version")
        version = version_doc.get("version") if isinstance(version_doc, dict) else None
    except EndpointError:
        version = None  # not every OpenAI-compatible server has /version
    return ServerInfo(
        base_url=base,
        models=ids,
        model=chosen,
        max_model_len=max_len if isinstance(max_len, int) else None,
        version=version,
        root=root if isinstance(root, str) else None,
    )


def probe_server(base_url: str, model: str | None, api_key: str | None = None) -> ServerInfo:
    """``probe`` with a session of its own, for callers outside an event loop."""

    async def go() -> ServerInfo:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            return await probe(session, base_url, model)

    return asyncio.run(go())


class Tokenizer:
    """The server's own tokenizer, reached over HTTP, so lengths are what the server counts."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._model = model

    async def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        doc = await post_json(
            self._session,
            f"{self._base}/tokenize",
            {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens},
        )
        tokens = _field(doc, "tokens", list, f"{self._base}/tokenize")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise EndpointError(f"{self._base}/tokenize answered tokens that are not integers")
        return tokens

    async def count_prompt(self, text: str) -> int:
        """Tokens the server will count for ``text`` sent to /v1/completions."""
        doc = await post_json(
            self._session,
            f"{self._base}/tokenize",
            {"model": self._model, "prompt": text, "add_special_tokens": True},
        )
        return int(_field(doc, "count", int, f"{self._base}/tokenize"))

    async def count_chat(self, text: str) -> int:
        """Tokens the server will count for ``text`` as the one user message of a chat request."""
        doc = await post_json(
            self._session,
            f"{self._base}/tokenize",
            {
                "model": self._model,
                "messages": [{"role": "user", "content": text}],
                "add_generation_prompt": True,
            },
        )
        return int(_field(doc, "count", int, f"{self._base}/tokenize"))

    async def decode(self, ids: list[int]) -> str:
        doc = await post_json(
            self._session, f"{self._base}/detokenize", {"model": self._model, "tokens": ids}
        )
        return str(_field(doc, "prompt", str, f"{self._base}/detokenize"))


async def scrape_metrics(session: aiohttp.ClientSession, base_url: str) -> str | None:
    """The Prometheus text of ``/metrics``, or None when the server has none."""
    try:
        async with session.get(base_url.rstrip("/") + "/metrics") as resp:
            if resp.status != 200:
                return None
            # Prometheus text is UTF-8; a byte that is not cannot hide the rest
            return (await resp.read()).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError):
        return None
