"""Request probes from a workload inside the mesh: what a learner would see sending N requests.

A probe is ONE `kubectl exec deploy/<workload> -c <app container> -- sh -c '<loop of curls>'`,
so the requests leave from that workload's pod through its own network path (its sidecar, or
none) on every backend, exactly like the commands in Istio's tasks. Each request prints its
status code, total time and curl's exit code; with `classify` it also prints its body, which
`classify` turns into a label (e.g. the reviews version), so a split is counted in one call:

    >>> from labs.traffic import probe, reviews_version
    >>> probe("http://productpage:9080/productpage", classify=reviews_version)

Configuration reaches the proxies a moment after it is applied, so instead of sleeping, a
notebook says what it expects to see and the probe repeats until it does (or gives up, saying so):

    >>> probe(..., classify=reviews_version, until=lambda r: r.fraction("v1") == 1)
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shlex
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from html import escape
from typing import TypeVar

from labs.cluster import ClusterRef, current_cluster
from labs.course import LabError, manifest
from labs.istio_names import SIDECAR_CONTAINER

UNCLASSIFIED = "unclassified"
PERCENTILES = (50, 90, 99)
_PODNAME = re.compile(r"reviews-(v\d+)-")
_STAR_COLOR = re.compile(r"""color"?\s*[:=]\s*"(black|red)\"""")
# How long `probe(until=...)` waits by default for the mesh to show what a notebook expects:
# a change takes a second or two to reach every proxy; far longer means it was never applied.
SETTLE_DEADLINE_S = 30.0
T = TypeVar("T")
SETTLE_INTERVAL_S = 1.0


class ProbeError(LabError):
    """A probe could not run; the message says what is missing and what to do."""


@dataclass(frozen=True, repr=False)
class ProbeResult:
    """Outcome of N requests: status codes (0 = no HTTP response), labels, latencies."""

    url: str
    workload: str
    namespace: str
    codes: Counter[int]
    labels: Counter[str]
    latencies_ms: tuple[float, ...]
    exit_codes: Counter[int] = field(default_factory=Counter)  # curl's, 0 = transfer ok
    unsettled_after: float | None = None  # `until` still false after this many seconds

    @property
    def settled(self) -> bool:
        """False when the probe's `until` did not hold by its deadline (this is the last try)."""
        return self.unsettled_after is None

    def _unsettled_note(self) -> str:
        return (f"did not settle within {self.unsettled_after:g} s: has the change been "
                "applied? (the last probe is shown)")

    @property
    def total(self) -> int:
        return sum(self.codes.values())

    @property
    def latency_ms(self) -> dict[str, float]:
        """Nearest-rank percentiles of the total request time: {"p50", "p90", "p99"}."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return {f"p{p}": math.nan for p in PERCENTILES}
        return {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
                for p in PERCENTILES}

    def fraction(self, label: str | int) -> float:
        """Share of the requests with this label (a str, e.g. "v1") or status code (an int)."""
        if not self.total:
            return 0.0
        counts: Mapping[object, int] = self.codes if isinstance(label, int) else self.labels
        return counts.get(label, 0) / self.total

    @property
    def error_rate(self) -> float:
        """Share of requests without a 2xx/3xx answer (5xx, 4xx and no response)."""
        if not self.total:
            return 0.0
        good = sum(n for code, n in self.codes.items() if 200 <= code < 400)
        return 1 - good / self.total

    def _rows(self) -> list[tuple[str, list[tuple[str, int]]]]:
        rows = [("status", [(str(code).zfill(3), n) for code, n in sorted(self.codes.items())])]
        if self.labels:
            rows.append(("label", sorted(self.labels.items())))
        return rows

    def __str__(self) -> str:
        lines = [] if self.settled else [self._unsettled_note()]
        lines.append(f"{self.total} requests to {self.url} from deploy/{self.workload} "
                     f"(namespace {self.namespace})")
        for title, items in self._rows():
            lines.append(f"{title:<14}{'count':>7}{'share':>9}")
            lines += [f"{key:<14}{n:>7}{n / self.total:>9.1%}" for key, n in items]
        lat = self.latency_ms
        lines.append("latency ms    " + "  ".join(f"{k} {v:.1f}" for k, v in lat.items()))
        return "\n".join(lines)

    __repr__ = __str__  # the plain-text view in a notebook or terminal

    def _repr_html_(self) -> str:
        parts = [] if self.settled else [
            f"<p style='color:#c62828'><b>{escape(self._unsettled_note())}</b></p>"]
        parts.append(f"<p>{self.total} requests to <code>{escape(self.url)}</code> from "
                     f"<code>deploy/{escape(self.workload)}</code> (namespace "
                     f"{escape(self.namespace)})</p><table>")
        for title, items in self._rows():
            parts.append(f"<tr><th>{title}</th><th>count</th><th>share</th></tr>")
            parts += [f"<tr><td>{escape(key)}</td><td>{n}</td><td>{n / self.total:.1%}</td></tr>"
                      for key, n in items]
        parts.append("<tr><th>latency</th><th colspan='2'>ms</th></tr>")
        parts += [f"<tr><td>{k}</td><td colspan='2'>{v:.1f}</td></tr>"
                  for k, v in self.latency_ms.items()]
        return "".join(parts) + "</table>"


def reviews_version(body: str) -> str | None:
    """Which reviews version answered, from a productpage HTML page or a reviews JSON body:
    the serving pod's name when shown, else red stars → v3, black → v2, reviews without
    stars → v1; None when no reviews were served (error page) or the version is ambiguous
    (v2/v3 with ratings unavailable)."""
    if found := _PODNAME.search(body):
        return found.group(1)
    if found := _STAR_COLOR.search(body):
        return "v3" if found.group(1) == "red" else "v2"
    if "Ratings service is currently unavailable" in body:
        return None
    if "Book Reviews" in body or _is_reviews_json(body):
        return "v1"
    return None


def _is_reviews_json(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("reviews"), list)


def probe(url: str, *, from_workload: str = "curl", namespace: str = "default", n: int = 100,
          headers: Mapping[str, str] | None = None, method: str = "GET",
          classify: Callable[[str], str | None] | None = None,
          cluster: ClusterRef | None = None, max_time: float = 30.0,
          until: Callable[[ProbeResult], bool] | None = None, deadline: float | None = None,
          interval: float = SETTLE_INTERVAL_S) -> ProbeResult:
    """Send `n` requests to `url` from a pod of Deployment `from_workload` and count them.

    `headers` are added to each request (e.g. {"end-user": "jason"}); `classify(body)` labels
    each answer (see `reviews_version`); `max_time` bounds each request in seconds. The
    cluster is `labs.cluster.current_cluster()` unless given.

    With `until`, what the caller expects to see (`lambda r: r.fraction(403) == 1`), the probe
    is repeated every `interval` seconds until it holds, because a change takes a moment to
    reach the proxies; after `deadline` seconds (default `SETTLE_DEADLINE_S`) the last result
    comes back with `settled` False, and shows that it did not settle.
    """
    if n < 1:
        raise ProbeError(f"n={n}: a probe sends at least one request; use e.g. n=100")
    if not re.match(r"^[A-Za-z]+$", method):
        raise ProbeError(f"method={method!r} is not an HTTP method; use e.g. 'GET' or 'POST'")
    ref = cluster or current_cluster()
    container = _app_container(ref, from_workload, namespace)

    def once() -> ProbeResult:
        return _send(ref, url, from_workload, namespace, container, n, method.upper(),
                     dict(headers or {}), classify, max_time)

    return settle(once, until, deadline, interval,
                  lambda result, limit: replace(result, unsettled_after=limit))


def settle(once: Callable[[], T], until: Callable[[T], bool] | None, deadline: float | None,
           interval: float, unsettled: Callable[[T, float], T]) -> T:
    """`once()`, again every `interval` seconds until `until` holds of its result (a change
    takes a moment to reach the proxies, and Prometheus a scrape to see it); past `deadline`
    seconds (default `SETTLE_DEADLINE_S`) the last result, as `unsettled(result, deadline)`
    marks it."""
    result = once()
    if until is None:
        return result
    limit = SETTLE_DEADLINE_S if deadline is None else deadline
    start = time.monotonic()
    while not until(result):
        if time.monotonic() - start + interval > limit:
            return unsettled(result, limit)
        time.sleep(interval)
        result = once()
    return result


def _send(ref: ClusterRef, url: str, workload: str, namespace: str, container: str, n: int,
          method: str, headers: dict[str, str], classify: Callable[[str], str | None] | None,
          max_time: float) -> ProbeResult:
    """One round of `n` requests, in one `kubectl exec`."""
    mark = f"__probe_{secrets.token_hex(4)}__"
    script = _script(url, n, method, headers, mark, classify is not None, max_time)
    result = ref.kubectl(f"--namespace={namespace}", "exec", f"deploy/{workload}",
                         "-c", container, "--", "sh", "-c", script,
                         timeout=n * (max_time + 1) + 60)
    outcomes = _parse(result.stdout, mark)
    if not outcomes and result.returncode != 0:
        raise ProbeError(f"could not run curl in deploy/{workload} (namespace {namespace}): "
                         f"{result.stderr.strip()}\nIs its pod running? `kubectl get pods -n "
                         f"{namespace}` shows it; wait for it with `kubectl rollout status -n "
                         f"{namespace} deploy/{workload}`.")
    if len(outcomes) != n:
        raise ProbeError(f"the probe from deploy/{workload} in namespace {namespace} "
                         f"finished {len(outcomes)} of {n} requests (kubectl exit "
                         f"{result.returncode}): {result.stderr.strip() or result.stdout[-500:]}")
    labels: Counter[str] = Counter()
    if classify is not None:
        labels.update(classify(body) or UNCLASSIFIED for *_, body in outcomes)
    return ProbeResult(url, workload, namespace,
                       codes=Counter(code for code, *_ in outcomes), labels=labels,
                       latencies_ms=tuple(ms for _, ms, *_ in outcomes),
                       exit_codes=Counter(exit_code for _, _, exit_code, _ in outcomes))


def _app_container(ref: ClusterRef, workload: str, namespace: str) -> str:
    """The Deployment's first container that is not the sidecar (where curl lives)."""
    got = ref.kubectl(f"--namespace={namespace}", "get", "deployment", workload, "-o",
                      "jsonpath={.spec.template.spec.containers[*].name}")
    if got.returncode != 0 and "NotFound" in got.stderr:
        todo = ("run the cells that create it first (a curl client: `kubectl apply -n "
                f"{namespace} -f {manifest('curl')}`), or pass from_workload= the name of "
                "a Deployment that has curl")
        if ref.kubectl("get", "namespace", namespace).returncode != 0:
            raise ProbeError(f"there is no namespace {namespace} yet, so no deploy/{workload} "
                             f"to send requests from: {todo}")
        raise ProbeError(f"deploy/{workload} is not in namespace {namespace} yet: {todo}")
    if got.returncode != 0:
        raise ProbeError(f"cannot read deploy/{workload} in namespace {namespace}: "
                         f"{got.stderr.strip()}")
    names = [name for name in got.stdout.split() if name != SIDECAR_CONTAINER]
    if not names:
        raise ProbeError(f"deploy/{workload} in namespace {namespace} has no application "
                         f"container to run curl in")
    return names[0]


def _script(url: str, n: int, method: str, headers: dict[str, str], mark: str,
            with_body: bool, max_time: float) -> str:
    curl = ["curl", "-s", "-X", method, "--max-time", f"{max_time:g}",
            "-w", f"\\n{mark} %{{http_code}} %{{time_total}} "]
    if not with_body:
        curl += ["-o", "/dev/null"]
    for name, value in headers.items():
        curl += ["-H", f"{name}: {value}"]
    curl.append(url)
    command = " ".join(shlex.quote(part) for part in curl)
    return (f'i=0; while [ "$i" -lt {n} ]; do {command}; echo "$?"; i=$((i+1)); done')


def _parse(stdout: str, mark: str) -> list[tuple[int, float, int, str]]:
    """(status, latency ms, curl exit code, body) per request, in order."""
    pattern = re.compile(rf"\n{re.escape(mark)} (\d+) ([\d.,]+) (\d+)\n")
    pieces = pattern.split(stdout)
    outcomes = []
    for i in range(1, len(pieces) - 3, 4):
        body, code, seconds, exit_code = pieces[i - 1], pieces[i], pieces[i + 1], pieces[i + 2]
        outcomes.append((int(code), float(seconds.replace(",", ".")) * 1000, int(exit_code),
                         body))
    return outcomes
