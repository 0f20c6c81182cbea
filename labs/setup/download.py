"""Bounded HTTP downloads and the published SHA-256 files, with one-line errors that say what
failed and what to do (a 404, a timeout, an unreachable host, a checksum that does not match).

urllib honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY, so a proxy needs no option here.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 30.0  # per connect and per read
DEADLINE_S = 600.0  # a whole download; istioctl's archive is the largest, tens of MB
CHUNK = 1 << 16
MAX_CHECKSUM_BYTES = 4096
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
HINT = ("check the version in cluster-setup/versions.env, or the mirror in "
        "MESHLAB_TOOLS_MIRROR (see README, `meshlab tools`)")


class DownloadError(RuntimeError):
    """A download or its verification failed; the message is one actionable line."""


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "meshlab-tools"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        advice = (f"no such release file; {HINT}" if exc.code == 404 else
                  "the server refused the download; try again later, or use a mirror "
                  "(MESHLAB_TOOLS_MIRROR)")
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}: {advice}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):  # a file:// mirror
            raise DownloadError(f"{url}: no such release file; {HINT}") from None
        raise _network_error(url, exc.reason, timeout) from None
    except TimeoutError as exc:
        raise _network_error(url, exc, timeout) from None


def _network_error(url: str, reason: object, timeout: float) -> DownloadError:
    if isinstance(reason, TimeoutError):
        return DownloadError(f"{url}: no answer within {timeout:g} s: check the network or "
                             "proxy (HTTPS_PROXY), or use a mirror (MESHLAB_TOOLS_MIRROR)")
    return DownloadError(f"{url}: cannot connect ({reason}): check the network or proxy "
                         "(HTTPS_PROXY), or use a mirror (MESHLAB_TOOLS_MIRROR)")


def fetch_text(url: str, timeout: float | None = None) -> str:
    """A small text file (a checksum file), at most MAX_CHECKSUM_BYTES."""
    timeout = TIMEOUT_S if timeout is None else timeout
    with _open(url, timeout) as response:
        try:
            body = response.read(MAX_CHECKSUM_BYTES + 1)
        except TimeoutError as exc:
            raise _network_error(url, exc, timeout) from None
    if len(body) > MAX_CHECKSUM_BYTES:
        raise DownloadError(f"{url}: larger than a checksum file ({MAX_CHECKSUM_BYTES} bytes); "
                            f"{HINT}")
    return body.decode("utf-8", "replace")


def fetch_file(url: str, dest: Path, timeout: float | None = None,
               deadline: float | None = None) -> str:
    """Stream `url` into `dest`; return the SHA-256 (hex) of what was written."""
    timeout = TIMEOUT_S if timeout is None else timeout
    deadline = DEADLINE_S if deadline is None else deadline
    digest = hashlib.sha256()
    give_up = time.monotonic() + deadline
    with _open(url, timeout) as response, dest.open("wb") as out:
        while True:
            try:
                chunk = response.read(CHUNK)
            except TimeoutError as exc:
                raise _network_error(url, exc, timeout) from None
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
            if time.monotonic() > give_up:
                raise DownloadError(f"{url}: not complete after {deadline:g} s: the network is "
                                    "too slow; use a mirror nearer by (MESHLAB_TOOLS_MIRROR)")
    return digest.hexdigest()


def expected_sha256(text: str, asset: str, source: str) -> str:
    """The digest in a published checksum file: either the bare hex (Helm's and Linkerd's
    `.sha256`) or `<hex> <name>` (kind's `.sha256sum`, `shasum -a 256` output with two spaces;
    Istio's `.sha256`, one space), whose name must then be the asset's."""
    fields = text.split()
    if not fields or not _HEX.match(fields[0]) or len(fields) > 2 or (
            len(fields) == 2 and fields[1].lstrip("*") != asset):
        raise DownloadError(f"{source}: not a SHA-256 checksum file for {asset} (it starts "
                            f"{text[:60].strip()!r}); {HINT}")
    return fields[0].lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
