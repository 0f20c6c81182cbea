"""Flagger's metric checks' plumbing: PromQL templates and the Prometheus HTTP API.

- Templates are Go text/template with Flagger's functions (fluxcd/flagger v1.44.0
  `pkg/apis/flagger/v1beta1/metric.go` TemplateFunctions, `pkg/metrics/observers/render.go`):
  `{{ name }} {{ namespace }} {{ target }} {{ service }} {{ ingress }} {{ route }}
  {{ interval }}` and `{{ variables.<key> }}`; a missing variable is an error
  (`missingkey=error`). Only these actions are rendered (no pipelines or conditionals).
- Queries go to `<address>/api/v1/query` with whitespace collapsed, the first sample's value is
  the result, and an empty or NaN answer is `no values found`
  (`pkg/metrics/providers/prometheus.go` RunQuery, `errors.go`).
- The builtin `request-success-rate` / `request-duration` queries per provider are those of
  `pkg/metrics/observers/{istio,linkerd,http}.go`, token for token (the line breaks differ;
  RunQuery collapses whitespace before sending).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import aiohttp

from labs.embedded.apiserver.api import ObjectApi

from .resolve import ResolveError, resolve_url

QUERY_TIMEOUT_S = 5.0  # PrometheusProvider.timeout
NO_VALUES = "no values found"  # providers.ErrNoValuesFound
_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")


class MetricError(Exception):
    """A failed query; `no_values` is errors.Is(err, ErrNoValuesFound)."""

    def __init__(self, message: str, no_values: bool = False) -> None:
        super().__init__(message)
        self.no_values = no_values

    def wrap(self, prefix: str) -> MetricError:
        """fmt.Errorf("<prefix>: %w", err), keeping what errors.Is sees."""
        return MetricError(f"{prefix}: {self}", self.no_values)


@dataclass
class TemplateModel:
    """MetricTemplateModel (toMetricModel in scheduler_metrics.go)."""

    name: str
    namespace: str
    target: str
    service: str
    ingress: str
    route: str
    interval: str
    variables: dict[str, str] = field(default_factory=dict)


def render(query: str, model: TemplateModel) -> str:
    """RenderQuery for the actions Flagger's templates use."""
    def action(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr.startswith("variables."):
            name = expr.removeprefix("variables.")
            if name not in model.variables:
                raise MetricError(
                    f'template excution failed: template: tmpl:1:{match.start() + 3}: '
                    f'executing "tmpl" at <variables.{name}>: map has no entry for key '
                    f'"{name}"')
            return model.variables[name]
        if expr in ("name", "namespace", "target", "service", "ingress", "route",
                    "interval"):
            return str(getattr(model, expr))
        raise MetricError(f'template parsing failed: template: tmpl:1: function "{expr}" '
                          "not defined")
    return _ACTION.sub(action, query)


async def run_query(api: ObjectApi, address: str, query: str) -> float:
    """RunQuery against the Prometheus at `address` (an in-cluster URL)."""
    base = urlsplit(address)
    if not base.scheme or not base.netloc:
        raise MetricError(f"prometheus address {address} is not a valid URL")
    trimmed = re.sub(r"\s+", " ", query)
    url = address.rstrip("/") + "/api/v1/query?" + urlencode({"query": trimmed})
    try:
        target = resolve_url(api, url)
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)) as session, \
                session.get(target) as resp:
            text = await resp.text(errors="replace")
            status, reason = resp.status, resp.reason or ""
    except ResolveError as err:
        raise MetricError(f'request failed: Get "{url}": {err}') from None
    except TimeoutError:
        raise MetricError(f'request failed: Get "{url}": context deadline exceeded') from None
    except aiohttp.ClientError as err:
        raise MetricError(f'request failed: Get "{url}": {err}') from None
    if status >= 400:
        raise MetricError(f"error response: Status {status} {reason}: {text}")
    try:
        results = json.loads(text)["data"]["result"]
    except (ValueError, KeyError, TypeError) as err:
        raise MetricError(f"error unmarshaling result: {err}, '{text}'") from None
    value: float | None = None
    for sample in results if isinstance(results, list) else []:
        if "values" in sample:
            raise MetricError("query returned multiple values")
        raw = (sample.get("value") or [None, None])[1]
        if isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                raise MetricError(f'strconv.ParseFloat: parsing "{raw}": invalid syntax'
                                  ) from None
    if value is None or math.isnan(value):
        raise MetricError(NO_VALUES, no_values=True)
    return value


async def is_online(api: ObjectApi, address: str) -> None:
    """IsOnline: `vector(1)` must answer 1."""
    try:
        value = await run_query(api, address, "vector(1)")
    except MetricError as err:
        raise err.wrap("running query failed") from None
    if value != 1.0:
        raise MetricError("value is not 1 for query: vector(1)")


_ISTIO = {
    "request-success-rate": """
    sum(rate(istio_requests_total{reporter="destination",
      destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",
      response_code!~"5.*"}[{{ interval }}]))
    / sum(rate(istio_requests_total{reporter="destination",
      destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"
      }[{{ interval }}])) * 100""",
    "request-duration": """
    histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{
      reporter="destination",destination_workload_namespace="{{ namespace }}",
      destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))""",
}
_LINKERD = {
    "request-success-rate": """
    sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",
      classification!="failure",direction="inbound"}[{{ interval }}]))
    / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",
      direction="inbound"}[{{ interval }}])) * 100""",
    "request-duration": """
    histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",
      deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))""",
}
_HTTP = {
    "request-success-rate": """
    sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",
      kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"
      }[{{ interval }}]))
    / sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",
      kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}]))
    * 100""",
    "request-duration": """
    histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{
      kubernetes_namespace="{{ namespace }}",
      kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}]))
      by (le))""",
}


@dataclass(frozen=True)
class Observer:
    """One provider's builtin queries. `to_ms` turns the duration query's value into
    milliseconds (Istio and Linkerd answer in ms, podinfo's histogram in seconds);
    `wraps_rate_errors`: Istio/Linkerd prefix a failed success-rate query with "running query
    failed: ", the HTTP observer does not."""

    queries: dict[str, str]
    to_ms: float
    wraps_rate_errors: bool


def observer(provider: str) -> Observer:
    """observers.Factory.Observer for the providers the course uses (default: Istio)."""
    if provider == "linkerd":
        return Observer(_LINKERD, 1.0, True)
    if provider == "kubernetes" or provider.startswith("gatewayapi"):
        return Observer(_HTTP, 1000.0, False)
    return Observer(_ISTIO, 1.0, True)


async def builtin(api: ObjectApi, address: str, provider: str, metric: str,
                  model: TemplateModel) -> float:
    """GetRequestSuccessRate (percent) or GetRequestDuration (seconds, truncated to whole
    milliseconds as `time.Duration(int64(value)) * time.Millisecond` does)."""
    obs = observer(provider)
    query = render(obs.queries[metric], model)
    try:
        value = await run_query(api, address, query)
    except MetricError as err:
        if metric == "request-duration" or obs.wraps_rate_errors:
            raise err.wrap("running query failed") from None
        raise
    if metric == "request-duration":
        return math.trunc(value * obs.to_ms) / 1000.0
    return value
