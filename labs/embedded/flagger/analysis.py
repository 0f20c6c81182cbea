"""The metric checks of one analysis step (fluxcd/flagger v1.44.0
`pkg/controller/scheduler_metrics.go`): builtin `request-success-rate` / `request-duration`,
inline `query`, then MetricTemplates, each against its threshold, with upstream's messages.

Only MetricTemplates of provider `prometheus` without `secretRef` are emulated; others fail
the check with an event saying so.
"""

from __future__ import annotations

from typing import Any

from labs.duration import go_duration_text
from labs.embedded.apiserver.api import ObjectApi

from . import metrics, spec
from .events import Recorder
from .metrics import MetricError, TemplateModel

Obj = dict[str, Any]
BUILTIN = ("request-success-rate", "request-duration")


def go_value(value: float | int) -> str:
    """Go's `%v` of a float64 threshold: 99 → `99`, 99.5 → `99.5`."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def model(cd: Obj, interval: str, variables: dict[str, str] | None) -> TemplateModel:
    """toMetricModel."""
    target = spec.target_name(cd)
    service = ((cd["spec"].get("service") or {}).get("name")) or target
    ingress = (cd["spec"].get("ingressRef") or {}).get("name") or target
    route = (cd["spec"].get("routeRef") or {}).get("name") or target
    return TemplateModel(cd["metadata"]["name"], cd["metadata"]["namespace"], target, service,
                         ingress, route, interval, dict(variables or {}))


class MetricChecks:
    def __init__(self, api: ObjectApi, events: Recorder, mesh_provider: str,
                 metrics_server: str) -> None:
        self.api, self.events = api, events
        self.mesh_provider, self.metrics_server = mesh_provider, metrics_server
        rt = api.registry.lookup("flagger.app", "v1beta1", "metrictemplates")
        assert rt is not None
        self.templates = rt

    def address(self, cd: Obj) -> str:
        return str(cd["spec"].get("metricsServer") or self.metrics_server)

    def metrics_provider(self, cd: Obj) -> str:
        provider = self.mesh_provider
        if cd["spec"].get("provider"):
            provider = cd["spec"]["provider"]
            if "linkerd" in self.mesh_provider:
                provider = "linkerd"
        return str(provider)

    async def providers_available(self, cd: Obj) -> None:
        """checkMetricProviderAvailability, at initialization."""
        try:
            for metric in spec.analysis(cd).get("metrics") or []:
                if metric.get("name") in BUILTIN:
                    try:
                        await metrics.is_online(self.api, self.address(cd))
                    except MetricError as err:
                        raise MetricError(f"prometheus not avaiable: {err}") from None
                    continue
                if metric.get("templateRef"):
                    template, namespace = self._template(cd, metric)
                    if isinstance(template, str):
                        raise MetricError(template)
                    address = self._template_address(template, namespace)
                    try:
                        await metrics.is_online(self.api, address)
                    except MetricError as err:
                        raise MetricError(
                            f"prometheus in metric template {template['metadata']['name']}."
                            f"{namespace} not avaiable: {err}") from None
        except MetricError as err:
            await self.events.error(cd, f"Error checking metric providers: {err}")
            return
        await self.events.info(cd, "all the metrics providers are available!")

    def _template(self, cd: Obj, metric: Obj) -> tuple[Obj | str, str]:
        ref = metric["templateRef"]
        namespace = ref.get("namespace") or cd["metadata"]["namespace"]
        template = self.api.find(self.templates, namespace, ref.get("name", ""))
        if template is None:
            return (f"metric template {ref.get('name')}.{namespace} error: "
                    f'metrictemplate.flagger.app "{ref.get("name")}" not found'), namespace
        return template, namespace

    @staticmethod
    def _template_address(template: Obj, namespace: str) -> str:
        provider = (template.get("spec") or {}).get("provider") or {}
        name = template["metadata"]["name"]
        if provider.get("type") != "prometheus" or provider.get("secretRef"):
            raise MetricError(
                f"metric template {name}.{namespace} provider {provider.get('type')} error: "
                "the embedded Flagger queries only Prometheus without credentials "
                "(provider.type prometheus, no secretRef)")
        address = str(provider.get("address") or "")
        if not address:
            raise MetricError(f"metric template {name}.{namespace} provider prometheus error: "
                              f"prometheus address  is not a valid URL")
        return address

    async def run(self, cd: Obj) -> bool:
        """runBuiltinMetricChecks then runMetricChecks."""
        return await self._builtin(cd) and await self._templated(cd)

    async def _threshold(self, cd: Obj, metric: Obj, value: float, label: str) -> bool:
        """A custom or inline metric's thresholdRange (or legacy `threshold` as a maximum)."""
        limits = metric.get("thresholdRange")
        key = spec.key(cd)
        if limits is not None:
            if limits.get("min") is not None and value < limits["min"]:
                await self.events.warning(cd, f"Halt {key} advancement {label} {value:.2f} < "
                                              f"{go_value(limits['min'])}")
                return False
            if limits.get("max") is not None and value > limits["max"]:
                await self.events.warning(cd, f"Halt {key} advancement {label} {value:.2f} > "
                                              f"{go_value(limits['max'])}")
                return False
        elif value > float(metric.get("threshold") or 0):
            await self.events.warning(cd, f"Halt {key} advancement {label} {value:.2f} > "
                                          f"{go_value(float(metric.get('threshold') or 0))}")
            return False
        return True

    async def _builtin(self, cd: Obj) -> bool:
        provider = self.metrics_provider(cd)
        address, key = self.address(cd), spec.key(cd)
        for metric in spec.analysis(cd).get("metrics") or []:
            name = metric.get("name")
            the_model = model(cd, metric.get("interval") or spec.METRIC_INTERVAL,
                              metric.get("templateVariables"))
            limits = metric.get("thresholdRange")
            if name in BUILTIN:
                try:
                    value = await metrics.builtin(self.api, address, provider, name, the_model)
                except MetricError as err:
                    if err.no_values:
                        suffix = f": {err}" if name == "request-success-rate" else ""
                        await self.events.warning(
                            cd, f"Halt advancement no values found for {provider} metric "
                                f"{name} probably {spec.target_key(cd)} is not receiving "
                                f"traffic{suffix}")
                    else:
                        await self.events.error(cd, f"Prometheus query failed: {err}")
                    return False
            if name == "request-success-rate":
                low = limits.get("min") if limits else None
                high = limits.get("max") if limits else None
                if limits is None and float(metric.get("threshold") or 0) > value:
                    low = float(metric.get("threshold") or 0)
                if low is not None and value < low:
                    await self.events.warning(cd, f"Halt {key} advancement success rate "
                                                  f"{value:.2f}% < {go_value(low)}%")
                    return False
                if high is not None and value > high:
                    await self.events.warning(cd, f"Halt {key} advancement success rate "
                                                  f"{value:.2f}% > {go_value(high)}%")
                    return False
            if name == "request-duration":
                low_ms = limits.get("min") if limits else None
                high_ms = limits.get("max") if limits else float(metric.get("threshold") or 0)
                shown = go_duration_text(value)
                if low_ms is not None and value < low_ms / 1000:
                    await self.events.warning(cd, f"Halt {key} advancement request duration "
                                                  f"{shown} < {go_duration_text(low_ms / 1000)}")
                    return False
                if high_ms is not None and value > high_ms / 1000:
                    await self.events.warning(cd, f"Halt {key} advancement request duration "
                                                  f"{shown} > {go_duration_text(high_ms / 1000)}")
                    return False
            if metric.get("query"):
                try:
                    value = await metrics.run_query(
                        self.api, address, metrics.render(metric["query"], the_model))
                except MetricError as err:
                    if err.no_values:
                        await self.events.warning(
                            cd, f"Halt advancement no values found for metric: {name}")
                    else:
                        await self.events.error(cd, f"Prometheus query failed for {name}: "
                                                    f"{err}")
                    return False
                if not await self._threshold(cd, metric, value, str(name)):
                    return False
        return True

    async def _templated(self, cd: Obj) -> bool:
        for metric in spec.analysis(cd).get("metrics") or []:
            name = metric.get("name")
            if not metric.get("templateRef"):
                if name not in BUILTIN and not metric.get("query"):
                    await self.events.error(cd, "Metric query failed for no usable metrics "
                                                "template and query were configured")
                    return False
                continue
            template, namespace = self._template(cd, metric)
            ref_name = metric["templateRef"].get("name")
            if isinstance(template, str):
                await self.events.error(cd, template[0].upper() + template[1:])
                return False
            try:
                address = self._template_address(template, namespace)
            except MetricError as err:
                await self.events.error(cd, str(err)[0].upper() + str(err)[1:])
                return False
            the_model = model(cd, metric.get("interval") or spec.METRIC_INTERVAL,
                              metric.get("templateVariables"))
            try:
                query = metrics.render(str(template["spec"].get("query", "")), the_model)
            except MetricError as err:
                await self.events.error(cd, f"Metric template {ref_name}.{namespace} query "
                                            f"render error: {err}")
                return False
            try:
                value = await metrics.run_query(self.api, address, query)
            except MetricError as err:
                if err.no_values:
                    await self.events.warning(cd, f"Halt advancement no values found for "
                                                  f"custom metric: {name}: {err}")
                else:
                    await self.events.error(cd, f"Metric query failed for {name}: {err}")
                return False
            if not await self._threshold(cd, metric, value, str(name)):
                return False
        return True
