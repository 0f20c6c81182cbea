"""A pod's status from its containers' statuses, with the kubelet's phase and condition rules."""

from __future__ import annotations

from typing import Any

from ..apiserver.objects import now
from .environment import POD_IP

Obj = dict[str, Any]


def phase(statuses: list[Obj], restart_policy: str) -> str:
    """pkg/kubelet's getPhase for the regular containers."""
    waiting = running = stopped = succeeded = 0
    for status in statuses:
        state = status.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"].get("exitCode") == 0
        elif (status.get("lastState") or {}).get("terminated"):
            stopped += 1  # waiting to restart after a run
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Pending"


def _condition(previous: list[Obj], ctype: str, value: bool, reason: str = "",
               message: str = "") -> Obj:
    """A condition whose lastTransitionTime moves only when its status flips."""
    wanted = "True" if value else "False"
    stamp = now()
    for cond in previous:
        if cond.get("type") == ctype and cond.get("status") == wanted:
            stamp = cond.get("lastTransitionTime") or stamp
    cond = {"type": ctype, "status": wanted, "lastTransitionTime": stamp}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def pod_status(old: Obj, containers: list[Obj], init_containers: list[Obj],
               restart_policy: str, start_time: str) -> Obj:
    """The new `status` of a pod; `old` supplies what must not change (times, qosClass)."""
    previous = old.get("conditions") or []
    pod_phase = phase(containers, restart_policy)
    terminal = pod_phase in ("Succeeded", "Failed")
    # Native sidecars (restartable init containers) count, as in the kubelet's
    # generateContainersReadyCondition (KEP-753); completed init containers report ready.
    unready = [c["name"] for c in [*init_containers, *containers] if not c["ready"]]
    all_ready = not unready and not terminal
    not_ready_msg = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    reason = "PodCompleted" if terminal else "ContainersNotReady"
    status: Obj = {
        "phase": pod_phase,
        "conditions": [
            _condition(previous, "PodReadyToStartContainers", not terminal),
            _condition(previous, "Initialized", True, "PodCompleted" if terminal else ""),
            _condition(previous, "Ready", all_ready, "" if all_ready else reason,
                       "" if all_ready or terminal else not_ready_msg),
            _condition(previous, "ContainersReady", all_ready, "" if all_ready else reason,
                       "" if all_ready or terminal else not_ready_msg),
            _condition(previous, "PodScheduled", True),
        ],
        "hostIP": POD_IP,
        "hostIPs": [{"ip": POD_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": old.get("startTime") or start_time,
        "containerStatuses": containers,
        "qosClass": old.get("qosClass", "BestEffort"),
    }
    if init_containers:
        status["initContainerStatuses"] = init_containers
    return status
