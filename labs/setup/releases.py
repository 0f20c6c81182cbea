"""Where kind, istioctl, linkerd and helm publish their builds, and under which names.

Each tool's layout follows its project's own installer, cited per tool below; the versions come
from cluster-setup/versions.env. `MESHLAB_TOOLS_MIRROR` (all tools) or
`MESHLAB_TOOLS_MIRROR_<TOOL>` (one tool) point the downloads at a mirror instead, for hosts
behind a proxy or without access to GitHub: see `release_base`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MIRROR_ENV = "MESHLAB_TOOLS_MIRROR"


class UnsupportedPlatform(RuntimeError):
    """No published build of the tools for this host's OS or CPU."""


@dataclass(frozen=True)
class Platform:
    """A host in Go's terms (GOOS/GOARCH), which all four projects name their builds by."""

    os: str  # linux, darwin
    arch: str  # amd64, arm64

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}"


_SYSTEMS = {"linux": "linux", "darwin": "darwin"}
# uname -m spellings, mapped as kind's, Istio's, Linkerd's and Helm's installers map them.
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_platform(system: str | None = None, machine: str | None = None) -> Platform:
    """This host (or the `uname -s` / `uname -m` given), or UnsupportedPlatform: the pinned
    tools are fetched for Linux and macOS on amd64 and arm64, the builds all four publish."""
    system = system if system is not None else platform.system()
    machine = machine if machine is not None else platform.machine()
    os_name = _SYSTEMS.get(system.lower())
    arch = _MACHINES.get(machine.lower()) or ("arm64" if machine.lower().startswith("armv8")
                                              else None)
    if os_name is None or arch is None:
        raise UnsupportedPlatform(
            f"no build of kind, istioctl, linkerd and helm for {system}/{machine}: they are "
            "published for Linux and macOS on x86_64 (amd64) and arm64; use the embedded "
            "backend on this host (`./run lab`), which needs none of them")
    return Platform(os_name, arch)


@dataclass(frozen=True)
class Release:
    """One tool's build for one platform: where it is, where its SHA-256 is, how to unpack."""

    tool: str
    version: str
    url: str
    checksum_url: str
    member: str | None  # the binary's path inside a .tar.gz; None when the asset is the binary

    @property
    def asset(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# (version, platform) -> (asset path below the release base, checksum suffix, tar member)
Layout = Callable[[str, Platform], tuple[str, str, str | None]]


def _kind(version: str, host: Platform) -> tuple[str, str, str | None]:
    # kubernetes-sigs/kind hack/release/build/cross.sh builds `kind-${GOOS}-${GOARCH}` and
    # writes `shasum -a 256 "$f" > "$f".sha256sum` next to each; site/content/docs/user/
    # quick-start.md downloads `.../dl/<version>/kind-linux-amd64` (a redirect to the release).
    return f"{version}/kind-{host.os}-{host.arch}", ".sha256sum", None


def _istioctl(version: str, host: Platform) -> tuple[str, str, str | None]:
    # istio/istio release/downloadIstioCtl.sh: macOS is `osx`; on macOS amd64 the archive has no
    # arch suffix ("without_arch"), elsewhere `istioctl-${ISTIO_VERSION}-${OSEXT}-${ISTIO_ARCH}
    # .tar.gz`, holding `istioctl` at its root. istio/release-builder pkg/build/archive.go
    # (createStandaloneIstioctl) publishes a `.sha256` beside it, written by pkg/util CreateSha
    # as "%x %s\n" (digest, one space, file name); that script does not check it, this does.
    osext = "osx" if host.os == "darwin" else host.os
    suffix = "" if (host.os, host.arch) == ("darwin", "amd64") else f"-{host.arch}"
    return f"{version}/istioctl-{version}-{osext}{suffix}.tar.gz", ".sha256", "istioctl"


def _linkerd(version: str, host: Platform) -> tuple[str, str, str | None]:
    # linkerd/website run.linkerd.io/public/install-edge: `linkerd2-cli-${LINKERD2_VERSION}-
    # ${OS}-${cli_arch}`, no arch suffix on macOS x86_64; checksum at "${url}.sha256".
    suffix = "" if (host.os, host.arch) == ("darwin", "amd64") else f"-{host.arch}"
    return f"{version}/linkerd2-cli-{version}-{host.os}{suffix}", ".sha256", None


def _helm(version: str, host: Platform) -> tuple[str, str, str | None]:
    # helm/helm scripts/get-helm-3 (and get-helm-4): HELM_DIST="helm-$TAG-$OS-$ARCH.tar.gz",
    # DOWNLOAD_URL="https://get.helm.sh/$HELM_DIST", CHECKSUM_URL="$DOWNLOAD_URL.sha256", and
    # the binary is "$OS-$ARCH/helm" inside the archive.
    return (f"helm-{version}-{host.os}-{host.arch}.tar.gz", ".sha256",
            f"{host.os}-{host.arch}/helm")


@dataclass(frozen=True)
class Tool:
    """A pinned tool: its versions.env key, upstream release base and layout, and the command
    that prints its version (to recognise a binary this installer did not record)."""

    name: str
    version_key: str
    upstream: str
    layout: Layout
    version_args: tuple[str, ...]


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("kind", "KIND_VERSION", "https://github.com/kubernetes-sigs/kind/releases/download",
         _kind, ("version",)),
    Tool("istioctl", "ISTIO_VERSION", "https://github.com/istio/istio/releases/download",
         _istioctl, ("version", "--remote=false")),
    Tool("linkerd", "LINKERD_VERSION", "https://github.com/linkerd/linkerd2/releases/download",
         _linkerd, ("version", "--client", "--short")),
    # get-helm-3's checkHelmInstalledVersion asks `helm version --template="{{ .Version }}"`.
    Tool("helm", "HELM_VERSION", "https://get.helm.sh", _helm,
         ("version", "--template={{ .Version }}")),
)}


def release_base(tool: Tool, env: Mapping[str, str] | None = None) -> str:
    """The tool's release base URL: `MESHLAB_TOOLS_MIRROR_<TOOL>` as given (a copy of that one
    release tree); else `$MESHLAB_TOOLS_MIRROR/<host>/<path>` of the upstream base (a mirror
    holding every file under its upstream host and path, as `wget -x` saves them: e.g.
    `<mirror>/get.helm.sh/helm-v4.2.3-linux-amd64.tar.gz`); else upstream."""
    env = os.environ if env is None else env
    own = env.get(f"{MIRROR_ENV}_{tool.name.upper()}", "").strip()
    if own:
        return own.rstrip("/")
    mirror = env.get(MIRROR_ENV, "").strip()
    if mirror:
        parts = urlsplit(tool.upstream)
        return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"
    return tool.upstream


def release(tool: Tool, version: str, host: Platform,
            env: Mapping[str, str] | None = None) -> Release:
    path, checksum_suffix, member = tool.layout(version, host)
    url = f"{release_base(tool, env)}/{path}"
    return Release(tool.name, version, url, url + checksum_suffix, member)
