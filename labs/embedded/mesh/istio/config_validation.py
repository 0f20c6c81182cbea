"""The checks of istiod's validating webhook (`validation.istio.io`) that the CRD schemas cannot
express, so a learner gets the same refusal from `kubectl apply` as on a real mesh instead of a
configuration that Istio would never have accepted (pilot/pkg/config/validation)."""

from __future__ import annotations

from collections.abc import Callable

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceType

from ..kube_state import Obj

WEBHOOK = "validation.istio.io"
MESH_GATEWAY = "mesh"


def virtual_service_errors(spec: Obj) -> list[str]:
    """Istio's ValidateVirtualService host rules: at least one host, no `*` when the
    VirtualService applies to sidecars (no `gateways`, or `mesh` among them)."""
    gateways = spec.get("gateways") or []
    applies_to_mesh = not gateways or MESH_GATEWAY in gateways
    hosts = spec.get("hosts") or []
    errors = [] if hosts else ["virtual service must have at least one host"]
    if applies_to_mesh and "*" in hosts:
        errors.append("wildcard host * is not allowed for virtual services bound to the mesh "
                      "gateway")
    return errors


def denied(errors: list[str]) -> ApiError:
    """What the API server answers when a webhook refuses: 400 with the webhook's reason."""
    return ApiError(400, "BadRequest", f'admission webhook "{WEBHOOK}" denied the request: '
                    f"configuration is invalid: {', '.join(errors)}")


def istio_validation_hook() -> Callable[[ResourceType, Obj], None]:
    def validate(rt: ResourceType, obj: Obj) -> None:
        if rt.group == "networking.istio.io" and rt.kind == "VirtualService":
            errors = virtual_service_errors(obj.get("spec") or {})
            if errors:
                raise denied(errors)

    return validate


def register_istio_validation(api: ObjectApi) -> None:
    api.validating_admission.append(istio_validation_hook())
