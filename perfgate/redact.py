"""Secrets never reach anything perfgate writes or prints.

A value is secret when it sits under a secret-looking name: an environment key or a
``--flag`` whose words include TOKEN, KEY, SECRET, PASSWORD, AUTH or CREDENTIAL (``HF_TOKEN``,
``VLLM_API_KEY``, ``--api-key``; not ``--max-num-batched-tokens``), or it is the user-info of a
URL (``http://user:password@host``). Two layers keep them out:

- where perfgate knows the structure (environments, argument lists, URLs, the command line) the
  value is replaced by ``***``, and the command line to reproduce a run refers to a variable
  instead (``HF_TOKEN=$HF_TOKEN``), so it still runs where that variable is set;
- every secret value seen (``register``) is scrubbed from any text perfgate writes: results,
  reports, server logs (vLLM prints its own arguments), terminal output. Values shorter than
  ``MIN_SCRUB`` characters are left to the first layer (scrubbing every "1" would wreck data).
"""

from __future__ import annotations

import os
import re
import shlex
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
MIN_SCRUB = 6
_SECRET_WORDS = {
    "token",
    "key",
    "apikey",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_registered: set[str] = set()
_lock = threading.Lock()


# Words that end a run-together name (HFTOKEN, MYAPIKEY, DBPASSWORD) and short ones that only
# stand alone (GITHUB_PAT, DB_PASS): "tokens" and "tokenizer" are counts and names, not secrets.
_SECRET_ENDINGS = ("token", "apikey", "secret", "password", "passwd", "credential", "credentials")
_SECRET_SHORT = {"pat", "pass", "pw", "pin"}


def is_secret_name(name: str) -> bool:
    """``HF_TOKEN``, ``HFTOKEN``, ``--api-key``, ``aws_secret_access_key``, ``GITHUB_PAT``,
    ``DB_PASS``: a word of the name is secret, or ends as a secret word does."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    return any(
        w in _SECRET_WORDS or w in _SECRET_SHORT or w.endswith(_SECRET_ENDINGS) for w in words
    )


def register(value: str | None) -> None:
    """Remember a secret value so ``scrub`` removes it from any text."""
    if value and len(value) >= MIN_SCRUB:
        with _lock:
            _registered.add(value)


def scrub(value: Any) -> Any:
    """``value`` (a string, or JSON-like data) with every registered secret replaced."""
    if not _registered:
        return value
    return _scrub(value, sorted(_registered, key=len, reverse=True))  # longest first


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets) for v in value]
    return value


def scrub_bytes(data: bytes) -> bytes:
    if not _registered:
        return data
    for secret in sorted(_registered, key=len, reverse=True):
        data = data.replace(secret.encode(), MASK.encode())
    return data


def _masked_query(query: str) -> str:
    """``api_key=abc&x=1`` -> ``api_key=***&x=1``: values of secret-named parameters masked."""
    return re.sub(
        r"([^&=]+)=([^&]*)",
        lambda m: f"{m.group(1)}={MASK}" if is_secret_name(unquote(m.group(1))) else m.group(0),
        query,
    )


def url(value: str) -> str:
    """The URL with its password (or lone user-info) and secret query parameters masked."""
    parts = urlsplit(value)
    query = _masked_query(parts.query)
    if parts.password is None and parts.username is None:
        if query == parts.query:
            return value
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    userinfo = f"{user}:{MASK}" if parts.password is not None else MASK
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, query, parts.fragment))


def url_secret(value: str) -> str | None:
    """What ``url`` masks in the user-info: the password, or the user-info when there is no
    password."""
    parts = urlsplit(value)
    return parts.password if parts.password is not None else parts.username


def register_url(value: str | None) -> None:
    """Remember every secret of a URL (user-info, secret query parameters) for ``scrub``."""
    if not value:
        return
    register(url_secret(value))
    for key, val in parse_qsl(urlsplit(value).query):
        if is_secret_name(key):
            register(val)


def env(values: Mapping[str, str]) -> dict[str, str]:
    """An environment with the values of secret-named keys masked."""
    return {k: (MASK if is_secret_name(k) else url(v)) for k, v in values.items()}


_FLAG_VALUE = re.compile(r"((?:--[\w-]+=)?)(--[\w-]+)=(.*)", re.S)


def _secret_flag(arg: str) -> tuple[str, str] | None:
    """(``--api-key=`` or ``--candidate-arg=--api-key=``, the value) of a secret flag."""
    m = _FLAG_VALUE.fullmatch(arg)
    if m and is_secret_name(m.group(2)):
        return m.group(1) + m.group(2) + "=", m.group(3)
    return None


def _bare_secret_flag(arg: str) -> bool:
    """``--api-key`` (or ``--candidate-arg=--api-key``), whose value is the next argument."""
    last = arg.rpartition("=")[2]
    return last.startswith("--") and is_secret_name(last)


def args(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret flags (``--api-key X``, ``--api-key=X``)
    and URL user-info masked."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and _bare_secret_flag(argv[i - 1]) and not arg.startswith("-"):
            out.append(MASK)
        elif (found := _secret_flag(arg)) is not None:
            out.append(found[0] + MASK)
        else:
            u = _URL.search(arg)
            out.append(arg[: u.start()] + url(u.group(0)) + arg[u.end() :] if u else arg)
    return out


def secrets_in_args(argv: Sequence[str]) -> list[str]:
    """The secret values of a command line (flag values and URL user-info)."""
    found = []
    for i, arg in enumerate(argv):
        if i and _bare_secret_flag(argv[i - 1]) and not arg.startswith("-"):
            found.append(arg)
        elif (flag := _secret_flag(arg)) is not None:
            found.append(flag[1])
        elif (u := _URL.search(arg)) and (secret := url_secret(u.group(0))):
            found.append(secret)
    return found


def register_env(values: Mapping[str, str]) -> None:
    for k, v in values.items():
        if is_secret_name(k):
            register(v)
        elif "@" in v:
            register_url(v)


def register_args(argv: Iterable[str]) -> None:
    for value in secrets_in_args(list(argv)):
        register(value)


def _var_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper() or "SECRET"


def reproduce(argv: Sequence[str]) -> str:
    """A shell command line equal to ``argv`` but for its secrets, each replaced by a reference
    to an environment variable the user sets (``HF_TOKEN=$HF_TOKEN``,
    ``--candidate-arg=--api-key=$VLLM_API_KEY``, ``http://user:$BASELINE_URL_PASSWORD@host``)."""
    words: list[str] = []
    previous = ""
    for arg in argv:
        words.append(_reproduce_word(arg, previous))
        previous = arg
    return " ".join(words)


def _flag_var(flag: str) -> str:
    # vLLM reads its API key from VLLM_API_KEY too: the natural variable to hold it
    return "VLLM_API_KEY" if flag == "--api-key" else _var_name(flag)


def _reproduce_word(arg: str, previous: str) -> str:
    # KEY=VALUE after an --*-env flag, or --*-env=KEY=VALUE
    prefix, pair = None, ""
    if previous.startswith("--") and previous.endswith("-env") and not arg.startswith("-"):
        prefix, pair = "", arg
    elif arg.startswith("--") and arg.partition("=")[0].endswith("-env"):
        flag, _, pair = arg.partition("=")
        prefix = flag + "="
    if prefix is not None:
        key, eq, _value = pair.partition("=")
        if eq and is_secret_name(key):
            return _with_vars(f"{prefix}{key}=", key)
    # a secret flag's value: --api-key=VALUE, --candidate-arg=--api-key=VALUE
    if (found := _secret_flag(arg)) is not None:
        return _with_vars(found[0], _flag_var(found[0].rstrip("=").rpartition("=")[2]))
    # the value after a bare secret flag: --api-key VALUE
    if previous and _bare_secret_flag(previous) and not arg.startswith("-"):
        return _with_vars("", _flag_var(previous.rpartition("=")[2]))
    # a URL with user-info: its password (or user) becomes a variable
    u = _URL.search(arg)
    if u and url_secret(u.group(0)) is not None:
        flag = previous if previous.startswith("--") else arg.partition("=")[0]
        masked = arg[: u.start()] + url(u.group(0)).replace(MASK, "\0") + arg[u.end() :]
        return _with_vars(masked, _var_name(f"{flag}-password"))
    return shlex.quote(arg)


def _with_vars(text: str, name: str) -> str:
    """``text`` double-quoted for a shell, with ``$name`` at the NUL placeholder or the end."""
    escaped = re.sub(r'(["\\\\$`])', r"\\\1", text)
    ref = "${" + name + "}"
    return f'"{escaped.replace(chr(0), ref)}"' if "\0" in text else f'"{escaped}{ref}"'


def api_key(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The key a vLLM server started with ``argv`` and ``environ`` demands (``--api-key`` or
    ``VLLM_API_KEY``), or None."""
    key = None
    for i, arg in enumerate(argv):
        if arg == "--api-key" and i + 1 < len(argv):
            key = argv[i + 1]
        elif arg.startswith("--api-key="):
            key = arg.partition("=")[2]
    return key or environ.get("VLLM_API_KEY") or None


def server_key(argv: Sequence[str], environ: Mapping[str, str], *, started: bool) -> str | None:
    """The key to send a server: for one perfgate starts, the key it is started with
    (``api_key``); for one it did not start, ``OPENAI_API_KEY``, as OpenAI clients (and
    ``vllm bench serve``) take it."""
    if started:
        return api_key(argv, environ)
    return os.environ.get("OPENAI_API_KEY") or None
