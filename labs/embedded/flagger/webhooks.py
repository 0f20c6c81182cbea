"""Flagger's webhooks: a JSON POST whose 2xx answer (≤ 202) lets the analysis go on
(fluxcd/flagger v1.44.0 `pkg/controller/webhook.go`: CallWebhook, CallEventWebhook,
callWebhook over hashicorp/go-retryablehttp).

`timeout` defaults to 10s; `retries` (default 0) retries connection errors and 5xx/429 answers
with retryablehttp's backoff (1 s doubling, at most 30 s). A non-2xx answer fails with its body
as the message; exhausted retries fail with retryablehttp's `POST <url> giving up after N
attempt(s)`. The URL is resolved to the pod's host port first (resolve.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from labs.duration import parse_go_duration
from labs.embedded.apiserver.api import ObjectApi

from . import spec
from .resolve import ResolveError, resolve_url

DEFAULT_TIMEOUT = "10s"
RETRY_WAIT_MIN_S, RETRY_WAIT_MAX_S = 1.0, 30.0
Obj = dict[str, Any]


class WebhookError(Exception):
    """The webhook did not approve; the message is Flagger's `%v` of the error."""


def checksum(cd: Obj) -> str:
    """canaryChecksum: the hash of TrackedConfigs and LastAppliedSpec."""
    status = cd.get("status") or {}
    return spec.compute_hash({"TrackedConfigs": status.get("trackedConfigs"),
                              "LastAppliedSpec": status.get("lastAppliedSpec", "")})


def payload(cd: Obj, phase: str, metadata: dict[str, str] | None) -> Obj:
    """CanaryWebhookPayload (metadata omitted when empty)."""
    body: Obj = {"name": cd["metadata"]["name"], "namespace": cd["metadata"]["namespace"],
                 "phase": phase, "checksum": checksum(cd)}
    if metadata:
        body["metadata"] = metadata
    return body


async def call_webhook(api: ObjectApi, cd: Obj, phase: str, hook: Obj) -> None:
    """CallWebhook: POST the payload to `hook.url`; raise WebhookError unless approved."""
    timeout = hook.get("timeout") or ""
    if len(timeout) < 2:
        timeout = DEFAULT_TIMEOUT
    await post(api, str(hook.get("url", "")), payload(cd, phase, hook.get("metadata")),
               timeout, int(hook.get("retries") or 0), bool(hook.get("disableTLS")))


async def call_event_webhook(api: ObjectApi, cd: Obj, hook: Obj, message: str,
                             event_type: str) -> None:
    """CallEventWebhook: the event's message, type and time in the metadata, then the hook's
    own metadata for keys not already set."""
    metadata = {"eventMessage": message, "eventType": event_type,
                "timestamp": str(time.time_ns() // 1_000_000)}
    for k, v in (hook.get("metadata") or {}).items():
        metadata.setdefault(k, v)
    body = payload(cd, (cd.get("status") or {}).get("phase", ""), metadata)
    await post(api, str(hook.get("url", "")), body, hook.get("timeout") or DEFAULT_TIMEOUT,
               int(hook.get("retries") or 0), bool(hook.get("disableTLS")))


async def post(api: ObjectApi, url: str, body: Obj, timeout: str, retries: int,
               disable_tls: bool = False) -> None:
    """callWebhook; `disable_tls` skips certificate verification (InsecureSkipVerify)."""
    try:
        timeout_s = parse_go_duration(timeout)
    except ValueError as err:
        raise WebhookError(str(err)) from None
    attempts, last_error = 0, ""
    data = json.dumps(body).encode()
    while True:
        attempts += 1
        retry = False
        try:
            target = resolve_url(api, url)
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as session, \
                    session.post(target, data=data, ssl=not disable_tls,
                                 headers={"Content-Type": "application/json"}) as resp:
                text = await resp.text(errors="replace")
                if resp.status >= 500 or resp.status == 429:
                    retry, last_error = True, ""
                elif resp.status > 202:
                    raise WebhookError(text)
                else:
                    return
        except ResolveError as err:
            retry, last_error = True, f'Post "{url}": {err}'
        except TimeoutError:
            retry, last_error = True, (f'Post "{url}": context deadline exceeded '
                                       "(Client.Timeout exceeded while awaiting headers)")
        except aiohttp.ClientError as err:
            retry, last_error = True, f'Post "{url}": {err}'
        if not retry or attempts > retries:
            break
        await asyncio.sleep(min(RETRY_WAIT_MIN_S * 2 ** (attempts - 1), RETRY_WAIT_MAX_S))
    suffix = f": {last_error}" if last_error else ""
    raise WebhookError(f"POST {url} giving up after {attempts} attempt(s){suffix}")
