"""`meshlab cluster create|delete --backend kind`: run the plan of labs/provision/kind_plan.py,
or print it (`--dry-run`). A create that fails once its cluster exists deletes the half-made
cluster (unless asked to keep it), so a second attempt starts clean."""

from __future__ import annotations

from dataclasses import dataclass

from labs.provision.kind_plan import (
    KindTarget,
    archive_name,
    create_plan,
    delete_plan,
    sample_images,
)
from labs.provision.run import Progress, StepFailed, resolve, run_steps
from labs.provision.steps import RETRY_DELAY_S, Step

CREATE_STEP = 2  # `kind create cluster`'s number in the create plan: from it on, clean up


@dataclass(frozen=True)
class Options:
    keep_on_failure: bool = False
    retry_delay_s: float = RETRY_DELAY_S


class ProvisionError(RuntimeError):
    """Creating or deleting a cluster failed; the message is what a person needs."""


def script(steps: list[Step]) -> str:
    """The commands of a plan, one per line (a heredoc where a step has stdin)."""
    return "\n".join(step.shell() for step in steps)


def check_image_cache(target: KindTarget) -> None:
    """Every sample image's archive is in the cache (when one is given), or ProvisionError."""
    if target.image_cache is None:
        return
    missing = [image for image in sample_images()
               if not (target.image_cache / archive_name(image)).is_file()]
    if missing:
        first = missing[0]
        raise ProvisionError(
            f"the image cache {target.image_cache} lacks {len(missing)} of the sample images' "
            f"archives ({', '.join(missing)}): save each with `docker pull IMAGE && docker save "
            f"--output {target.image_cache}/<archive> IMAGE`, e.g. `docker pull {first} && "
            f"docker save --output {target.image_cache / archive_name(first)} {first}` (see "
            "cluster-setup/README.md)")


def create(target: KindTarget, progress: Progress, options: Options = Options()) -> str:
    """Create the cluster; returns the line that selects it. Raises ProvisionError."""
    steps = create_plan(target)
    check_image_cache(target)
    binaries = resolve(tool for step in steps + delete_plan(target) for tool in step.tools)
    try:
        run_steps(steps, binaries, progress, options.retry_delay_s)
    except StepFailed as exc:
        if exc.number < CREATE_STEP:  # nothing was created
            raise ProvisionError(str(exc)) from None
        raise ProvisionError(f"{exc}\n{_clean_up(target, binaries, progress, options)}") from None
    return target.access()


def _clean_up(target: KindTarget, binaries: dict[str, str], progress: Progress,
              options: Options) -> str:
    if options.keep_on_failure:
        return (f"the cluster {target.cluster} was kept (--keep-on-failure): look at it with "
                f"`kubectl --context {target.context} get pods -A`, then `meshlab cluster delete "
                f"--backend kind --student {target.student}`")
    try:
        run_steps(delete_plan(target), binaries, progress, options.retry_delay_s)
    except StepFailed as exc:
        return f"cleaning up failed too: {exc}"
    return (f"the half-created cluster {target.cluster} was deleted (`kind delete cluster "
            f"--name {target.cluster}`); run the command again, or add --keep-on-failure to "
            "keep it for debugging")


def delete(target: KindTarget, progress: Progress) -> None:
    steps = delete_plan(target)
    try:
        run_steps(steps, resolve(tool for step in steps for tool in step.tools), progress,
                  RETRY_DELAY_S)
    except StepFailed as exc:
        raise ProvisionError(str(exc)) from None

