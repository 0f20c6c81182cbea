"""One tick of a Canary: Flagger's `advanceCanary` (fluxcd/flagger v1.44.0
`pkg/controller/scheduler.go`), step for step and in upstream's order, for a Deployment target
with the canary (progressive traffic shifting, optionally a mirrored first step), A/B testing
and blue/green (optionally mirrored) strategies (runCanary, runAB, runBlueGreen):

bootstrap (Services, primary, apex → primary, target scaled to 0, mesh routes 100/0,
`Initialized`) → shouldAdvance → primary ready → routes → new revision (confirm-rollout gate,
scale up, `Progressing`, return) → revision changed again (restart) → canary ready →
skipAnalysis → rollback hooks → `Promoting` (shift to primary) → `Finalising` (scale down,
`Succeeded`) → failed checks ≥ threshold (rollback) → first step: pre-rollout hooks, else the
analysis (rollout hooks, metrics) → confirm-traffic-increase → raise the canary weight, or at
maxWeight: confirm-promotion, copy the template to the primary, `Promoting`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError

from . import spec
from .analysis import MetricChecks
from .deployment import DeploymentTarget, FlaggerError
from .events import Recorder
from .hooks import Hooks
from .routers import ISTIO, KubernetesRouter, MeshRouter, mesh_router, not_emulated
from .status import (
    FAILED,
    FINALISING,
    INITIALIZED,
    INITIALIZING,
    PROGRESSING,
    PROMOTING,
    SUCCEEDED,
    WAITING,
    WAITING_PROMOTION,
    StatusWriter,
)

Obj = dict[str, Any]
# Flagger as kustomize/istio installs it: -mesh-provider=istio,
# -metrics-server=http://prometheus.istio-system:9090
DEFAULT_METRICS_SERVER = "http://prometheus.istio-system:9090"
log = logging.getLogger("meshlab.flagger")
AUTOSCALER_NOT_EMULATED = (
    "autoscalerRef is not emulated: the embedded cluster runs no HorizontalPodAutoscaler, so "
    "the primary and the canary run the target's replicas")


def _phase(cd: Obj) -> str:
    return str((cd.get("status") or {}).get("phase", ""))


def _with_phase(cd: Obj, phase: str) -> Obj:
    """A copy of the Canary showing `phase` (upstream's DeepCopy before an event)."""
    out = copy.deepcopy(cd)
    out.setdefault("status", {})["phase"] = phase
    return out


class Scheduler:
    def __init__(self, api: ObjectApi, mesh_provider: str = ISTIO,
                 metrics_server: str = DEFAULT_METRICS_SERVER) -> None:
        self.api = api
        rt = api.registry.lookup("flagger.app", "v1beta1", "canaries")
        assert rt is not None
        self.canaries = rt
        self.mesh_provider = mesh_provider
        self.events = Recorder(api)
        self.status = StatusWriter(api, rt)
        self.deployments = DeploymentTarget(api, self.status)
        self.hooks = Hooks(api, self.events, self.status)
        self.metrics = MetricChecks(api, self.events, mesh_provider, metrics_server)

    async def advance(self, name: str, namespace: str) -> None:
        """One tick; Flagger's errors become Warning events, never exceptions."""
        cd = self.api.find(self.canaries, namespace, name)
        if cd is None:
            log.error("Canary %s.%s not found", name, namespace)
            return
        try:
            await self._advance(cd)
        except FlaggerError as err:
            await self.events.warning(cd, str(err))
        except ApiError as err:
            await self.events.warning(cd, err.message)

    async def _advance(self, cd: Obj) -> None:
        if not spec.target_name(cd):
            raise FlaggerError(f"{spec.key(cd)} has no spec.targetRef.name: name the Deployment "
                               "whose new releases this Canary analyses")
        if cd["spec"].get("suspend"):
            await self.events.info(cd, "skipping canary run as object is suspended")
            return
        provider = str(cd["spec"].get("provider") or self.mesh_provider)
        unsupported = not_emulated(cd, provider)
        if unsupported:
            await self.events.warning(cd, unsupported)
            return
        label, value, ports = self.deployments.metadata(cd)
        kube = KubernetesRouter(self.api, label, value, ports)
        try:
            kube.initialize(cd)
        except FlaggerError as err:
            raise FlaggerError(f"reconcileService failed: {err}") from None
        if not spec.skip_analysis(cd) and _phase(cd) in ("", INITIALIZING):
            await self.metrics.providers_available(cd)
        if cd["spec"].get("autoscalerRef") and _phase(cd) in ("", INITIALIZING):
            await self.events.warning(cd, AUTOSCALER_NOT_EMULATED)
        mesh = mesh_router(self.api, provider)
        try:
            self.deployments.initialize(cd)
        except FlaggerError as err:
            await self.events.warning(cd, str(err))
            if not err.retriable:
                await self.rollback(cd, mesh)
            return
        kube.reconcile(cd)
        if _phase(cd) in ("", INITIALIZING):
            log.info("%s: Scaling down Deployment %s", spec.key(cd), spec.target_key(cd))
            try:
                self.deployments.scale_to_zero(cd)
            except FlaggerError as err:
                raise FlaggerError(f"scaling down canary Deployment {spec.target_key(cd)} "
                                   f"failed: {err}") from None
        mesh.reconcile(cd)
        cd = await self._set_phase_initialized(cd)
        if not self._should_advance(cd):
            return
        max_weight = spec.max_weight(cd)
        if not spec.skip_analysis(cd):
            try:
                self.deployments.is_primary_ready(cd)
            except FlaggerError as err:
                await self.events.warning(cd, str(err))
                if not err.retriable:
                    if _phase(cd) in (PROMOTING, FINALISING):
                        await self._failed_promotion(cd, mesh, str(err))
                    else:
                        await self.rollback(cd, mesh)
                return
        primary_weight, canary_weight, mirrored = mesh.get_routes(cd)
        if not await self._check_canary_status(cd):
            return
        if _phase(cd) in (PROGRESSING, WAITING_PROMOTION) and self._revision_changed(cd):
            await self.events.info(cd, "New revision detected! Restarting analysis for "
                                       f"{spec.target_key(cd)}")
            mesh.set_routes(cd, spec.TOTAL_WEIGHT, 0, False)
            self.deployments.sync_status(cd, PROGRESSING)
            return
        try:
            self.deployments.is_canary_ready(cd)
        except FlaggerError as err:
            await self.events.warning(cd, str(err))
            if not err.retriable:
                await self.rollback(cd, mesh)
            return
        if spec.skip_analysis(cd):
            await self._skip_analysis(cd, mesh)
            return
        if _phase(cd) in (PROGRESSING, WAITING, WAITING_PROMOTION) and \
                await self.hooks.rollback(cd, _phase(cd)):
            await self.events.warning(cd, f"Rolling back {spec.key(cd)} manual webhook invoked")
            await self.rollback(cd, mesh)
            return
        if _phase(cd) == PROMOTING:
            await self._promotion_traffic_shift(cd, mesh, canary_weight, primary_weight)
            return
        if _phase(cd) == FINALISING:
            self.deployments.scale_to_zero(cd)
            self.status.set_phase(cd, SUCCEEDED)
            succeeded = _with_phase(cd, SUCCEEDED)
            await self.hooks.post_rollout(succeeded, SUCCEEDED)
            await self.events.info(succeeded, "Promotion completed! Scaling down "
                                              f"{spec.target_key(cd)}")
            return
        failed_checks = int((cd.get("status") or {}).get("failedChecks", 0))
        if _phase(cd) in (PROGRESSING, WAITING_PROMOTION) and \
                failed_checks >= spec.threshold(cd):
            await self.rollback(cd, mesh)
            return
        iterations = int((cd.get("status") or {}).get("iterations", 0))
        mirror = bool(spec.analysis(cd).get("mirror"))
        if canary_weight == 0 and iterations == 0 and not (mirror and mirrored):
            await self.events.info(cd, f"Starting canary analysis for {spec.target_key(cd)}")
            if not await self.hooks.pre_rollout(cd):
                self.status.set_failed_checks(cd, failed_checks + 1)
                return
        elif not await self.hooks.rollout(cd) or not await self.metrics.run(cd):
            self.status.set_failed_checks(cd, failed_checks + 1)
            return
        if spec.strategy(cd) == spec.AB_TESTING:
            await self._run_ab(cd, mesh)
            return
        if spec.strategy(cd) == spec.BLUE_GREEN:
            await self._run_blue_green(cd, mesh, mirrored)
            return
        if spec.next_step_weight(cd, canary_weight) > 0:
            if not mirrored and _phase(cd) not in (PROMOTING, WAITING_PROMOTION, FINALISING) \
                    and not await self.hooks.confirm_traffic_increase(cd):
                return
            await self._run_canary(cd, mesh, canary_weight, primary_weight, max_weight,
                                   mirrored)

    async def _set_phase_initialized(self, cd: Obj) -> Obj:
        if _phase(cd) not in ("", INITIALIZING):
            return cd
        self.deployments.sync_status(cd, INITIALIZED)
        fresh = self.api.get(self.canaries, cd["metadata"]["namespace"], cd["metadata"]["name"])
        cd = copy.deepcopy(cd)
        status = cd.setdefault("status", {})
        status["phase"] = INITIALIZED
        for field in ("lastAppliedSpec", "trackedConfigs"):
            if field in (fresh.get("status") or {}):
                status[field] = fresh["status"][field]
        status["lastPromotedSpec"] = (fresh.get("status") or {}).get("lastPromotedSpec")
        await self.events.info(cd, f"Initialization done! {spec.key(cd)}")
        return cd

    def _should_advance(self, cd: Obj) -> bool:
        if _phase(cd) in (PROGRESSING, WAITING, WAITING_PROMOTION, PROMOTING, FINALISING):
            return True
        status = cd.get("status") or {}
        if _phase(cd) == FAILED:  # keep lastAppliedSpec current while failed
            self.deployments.sync_status(cd, FAILED,
                             canary_weight=int(status.get("canaryWeight", 0)),
                             failed_checks=int(status.get("failedChecks", 0)),
                             iterations=int(status.get("iterations", 0)))
        return self._revision_changed(cd)

    def _revision_changed(self, cd: Obj) -> bool:
        """HasTargetChanged or HaveDependenciesChanged."""
        return self.deployments.has_target_changed(cd) or \
            self.deployments.have_dependencies_changed(cd)

    async def _check_canary_status(self, cd: Obj) -> bool:
        """checkCanaryStatus: a new revision starts here and the tick ends."""
        if _phase(cd) in (PROGRESSING, WAITING_PROMOTION, PROMOTING, FINALISING):
            return True
        fresh = self.api.get(self.canaries, cd["metadata"]["namespace"], cd["metadata"]["name"])
        if not await self.hooks.confirm_rollout(fresh):
            return False
        await self.events.info(_with_phase(fresh, PROGRESSING), "New revision detected! "
                               f"Scaling up {spec.target_key(fresh)}")
        try:
            self.deployments.scale_from_zero(fresh)
        except FlaggerError as err:
            await self.events.error(fresh, str(err))
            return False
        self.deployments.sync_status(fresh, PROGRESSING)
        return False

    async def _skip_analysis(self, cd: Obj, mesh: MeshRouter) -> None:
        """shouldSkipAnalysis: promote at once."""
        mesh.set_routes(cd, spec.TOTAL_WEIGHT, 0, False)
        target = spec.target_name(cd)
        namespace = cd["metadata"]["namespace"]
        await self.events.info(cd, f"Copying {target}.{namespace} template spec to "
                                   f"{target}-primary.{namespace}")
        self.deployments.promote(cd)
        self.deployments.scale_to_zero(cd)
        self.status.set_phase(cd, SUCCEEDED)
        succeeded = _with_phase(cd, SUCCEEDED)
        await self.hooks.post_rollout(succeeded, SUCCEEDED)
        await self.events.info(succeeded, "Promotion completed! Canary analysis was skipped "
                                          f"for {spec.target_key(cd)}")

    async def _promotion_traffic_shift(self, cd: Obj, mesh: MeshRouter, canary_weight: int,
                                       primary_weight: int) -> None:
        step = int(spec.analysis(cd).get("stepWeightPromotion") or 0)
        if step == 0:
            await self.events.info(cd, "Routing all traffic to primary")
            mesh.set_routes(cd, spec.TOTAL_WEIGHT, 0, False)
            self.status.set_phase(cd, FINALISING)
            return
        if canary_weight > 0:
            primary_weight = min(primary_weight + step, spec.TOTAL_WEIGHT)
            canary_weight = max(canary_weight - step, 0)
            mesh.set_routes(cd, primary_weight, canary_weight, False)
            await self.events.info(cd, f"Advance {spec.key(cd)} primary weight "
                                       f"{primary_weight}")
            if primary_weight == spec.TOTAL_WEIGHT:
                self.status.set_phase(cd, FINALISING)
            else:
                self.status.set_weight(cd, canary_weight)

    async def _run_canary(self, cd: Obj, mesh: MeshRouter, canary_weight: int,
                          primary_weight: int, max_weight: int, mirrored: bool) -> None:
        if canary_weight < max_weight:
            step = spec.next_step_weight(cd, canary_weight)
            if spec.analysis(cd).get("mirror") and canary_weight == 0:
                # one mirrored step (all traffic to the primary, copies to the canary) first
                mirrored = not mirrored
                primary_weight = spec.TOTAL_WEIGHT if mirrored else spec.TOTAL_WEIGHT - step
                canary_weight = 0 if mirrored else step
                log.info("%s: Running mirror step %d/%d/%s", spec.key(cd), primary_weight,
                         canary_weight, str(mirrored).lower())
            else:
                primary_weight = max(primary_weight - step, 0)
                canary_weight = min(canary_weight + step, spec.TOTAL_WEIGHT)
            mesh.set_routes(cd, primary_weight, canary_weight, mirrored)
            self.status.set_weight(cd, canary_weight)
            await self.events.info(cd, f"Advance {spec.key(cd)} canary weight {canary_weight}")
            return
        if not await self.hooks.confirm_promotion(cd):
            return
        await self._promote(cd)

    async def _advance_iteration(self, cd: Obj, done: int, total: int) -> None:
        self.status.set_iterations(cd, done + 1)
        await self.events.info(cd, f"Advance {spec.key(cd)} canary iteration "
                                   f"{done + 1}/{total}")

    async def _promote(self, cd: Obj) -> None:
        """Copy the target's template to the primary and start promoting."""
        target, namespace = spec.target_name(cd), cd["metadata"]["namespace"]
        await self.events.info(cd, f"Copying {target}.{namespace} template spec to "
                                   f"{target}-primary.{namespace}")
        self.deployments.promote(cd)
        self.status.set_phase(cd, PROMOTING)

    async def _run_ab(self, cd: Obj, mesh: MeshRouter) -> None:
        """runAB: the matched requests all go to the canary for `iterations` steps."""
        total = int(spec.analysis(cd).get("iterations") or 0)
        done = int((cd.get("status") or {}).get("iterations", 0))
        if total > done:
            mesh.set_routes(cd, 0, spec.TOTAL_WEIGHT, False)
            await self._advance_iteration(cd, done, total)
            return
        if not await self.hooks.confirm_promotion(cd):
            return
        if total == done:
            await self._promote(cd)

    async def _run_blue_green(self, cd: Obj, mesh: MeshRouter, mirrored: bool) -> None:
        """runBlueGreen: `iterations` analysis steps on the canary (receiving a copy of the
        traffic when `mirror` is set), then all traffic to it, then promotion."""
        total = int(spec.analysis(cd).get("iterations") or 0)
        done = int((cd.get("status") or {}).get("iterations", 0))
        mirror = bool(spec.analysis(cd).get("mirror"))
        if total > done:
            if mirror and not mirrored:
                mesh.set_routes(cd, spec.TOTAL_WEIGHT, 0, True)
                log.info("%s: Start traffic mirroring", spec.key(cd))
            await self._advance_iteration(cd, done, total)
            return
        if not await self.hooks.confirm_promotion(cd):
            return
        if total == done:
            await self.events.info(cd, "Stop traffic mirroring and route all traffic to canary"
                                   if mirror else "Routing all traffic to canary")
            mesh.set_routes(cd, 0, spec.TOTAL_WEIGHT, False)
            self.status.set_iterations(cd, done + 1)
            return
        await self._promote(cd)

    async def rollback(self, cd: Obj, mesh: MeshRouter) -> None:
        failed_checks = int((cd.get("status") or {}).get("failedChecks", 0))
        if failed_checks >= spec.threshold(cd):
            await self.events.warning(cd, f"Rolling back {spec.key(cd)} failed checks "
                                          f"threshold reached {failed_checks}")
        mesh.set_routes(cd, spec.TOTAL_WEIGHT, 0, False)
        await self.events.warning(_with_phase(cd, FAILED),
                                  f"Canary failed! Scaling down {spec.key(cd)}")
        self.deployments.scale_to_zero(cd)
        self.deployments.sync_status(cd, FAILED)
        await self.hooks.post_rollout(cd, FAILED)

    async def _failed_promotion(self, cd: Obj, mesh: MeshRouter, error: str) -> None:
        """handleFailedPromotion: the primary broke mid-promotion; the canary keeps it all."""
        await self.events.warning(cd, f"Promotion of {spec.target_key(cd)} failed, primary not "
                                      f"ready: {error}")
        mesh.set_routes(cd, 0, spec.TOTAL_WEIGHT, False)
        self.deployments.sync_status(cd, FAILED,
                         canary_weight=spec.TOTAL_WEIGHT)
        await self.hooks.post_rollout(cd, FAILED)
