"""`meshlab tools install|list|path` against a loopback HTTP server laid out as the upstream
release sites (a `MESHLAB_TOOLS_MIRROR`): each tool a small shell script that prints its
version, published beside its SHA-256 file in the tool's own format and archive layout."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labs.cli import main
from labs.setup import download
from labs.setup.download import DownloadError, expected_sha256
from labs.setup.releases import (
    TOOLS,
    Platform,
    UnsupportedPlatform,
    host_platform,
    release,
    release_base,
)
from labs.setup.tools import ToolMissing, install, read_manifest, status, tool_path
from labs.versions import version

LINUX = Platform("linux", "amd64")
# What each tool's version command prints (kind version; istioctl version --remote=false;
# linkerd version --client --short; helm version --template '{{ .Version }}').
SAYS = {"kind": "kind {v} go1.24.0 linux/amd64", "istioctl": "client version: {v}",
        "linkerd": "{v}", "helm": "{v}"}


def script(says: str) -> bytes:
    return f"#!/bin/sh\necho '{says}'\n".encode()


def tarball(member: str, body: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size, info.mode = len(body), 0o755
        tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class Mirror:
    """A loopback release mirror: files under `root` as <host>/<path> of the upstream URLs."""

    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)
    slow: set[str] = field(default_factory=set)  # paths answered after SLOW_S

    def file(self, url: str) -> Path:
        return self.root / url.removeprefix(self.url + "/")

    def publish(self, name: str, host: Platform = LINUX, *, says: str | None = None,
                checksum: str | None = None) -> None:
        """Put `name`'s pinned build for `host` and its checksum file on the mirror."""
        want = version(TOOLS[name].version_key)
        found = release(TOOLS[name], want, host, {"MESHLAB_TOOLS_MIRROR": self.url})
        binary = script(says if says is not None else SAYS[name].format(v=want))
        body = binary if found.member is None else tarball(found.member, binary)
        digest = checksum or hashlib.sha256(body).hexdigest()
        # kind's .sha256sum is `shasum -a 256` output (two spaces); Istio's .sha256 is
        # release-builder's "%x %s\n"; Helm's and Linkerd's .sha256 hold the bare digest.
        line = {"kind": f"{digest}  {found.asset}\n", "istioctl": f"{digest} {found.asset}\n"
                }.get(name, f"{digest}\n")
        self.file(found.url).parent.mkdir(parents=True, exist_ok=True)
        self.file(found.url).write_bytes(body)
        self.file(found.checksum_url).write_text(line)

    def downloads(self) -> list[str]:
        return [path for path in self.requests if not path.endswith(("sha256", "sha256sum"))]


SLOW_S = 3.0


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    served = Mirror(tmp_path / "mirror")
    served.root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(self.path)
            if self.path in served.slow:
                time.sleep(SLOW_S)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served.root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def env_for(mirror: Mirror) -> dict[str, str]:
    return {"MESHLAB_TOOLS_MIRROR": mirror.url}


def nothing_left(root: Path, name: str) -> None:
    assert not (root / "bin" / name).exists()
    assert not list(root.glob(".partial-*"))
    assert name not in read_manifest(root)


def test_upstream_urls_follow_each_projects_installer() -> None:
    """The URLs are those of kind's release assets, downloadIstioCtl.sh (osx, no arch on
    Intel Macs), install-edge (no arch on Intel Macs) and get-helm-3."""
    mac_intel, mac_arm = Platform("darwin", "amd64"), Platform("darwin", "arm64")
    assert release(TOOLS["kind"], "v0.32.0", LINUX, {}).url == \
        "https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-linux-amd64"
    assert release(TOOLS["kind"], "v0.32.0", LINUX, {}).checksum_url.endswith(
        "kind-linux-amd64.sha256sum")
    assert release(TOOLS["istioctl"], "1.30.5", mac_intel, {}).url == \
        "https://github.com/istio/istio/releases/download/1.30.5/istioctl-1.30.5-osx.tar.gz"
    assert release(TOOLS["istioctl"], "1.30.5", mac_arm, {}).asset == \
        "istioctl-1.30.5-osx-arm64.tar.gz"
    assert release(TOOLS["istioctl"], "1.30.5", LINUX, {}).checksum_url.endswith(
        "istioctl-1.30.5-linux-amd64.tar.gz.sha256")
    assert release(TOOLS["linkerd"], "edge-26.7.2", mac_intel, {}).url == (
        "https://github.com/linkerd/linkerd2/releases/download/edge-26.7.2/"
        "linkerd2-cli-edge-26.7.2-darwin")
    assert release(TOOLS["linkerd"], "edge-26.7.2", Platform("linux", "arm64"), {}).asset == \
        "linkerd2-cli-edge-26.7.2-linux-arm64"
    helm = release(TOOLS["helm"], "v4.2.3", mac_arm, {})
    assert (helm.url, helm.checksum_url, helm.member) == (
        "https://get.helm.sh/helm-v4.2.3-darwin-arm64.tar.gz",
        "https://get.helm.sh/helm-v4.2.3-darwin-arm64.tar.gz.sha256", "darwin-arm64/helm")


def test_mirror_settings() -> None:
    """MESHLAB_TOOLS_MIRROR keeps upstream host and path below it; a per-tool variable
    replaces that tool's release base, and wins."""
    everything = {"MESHLAB_TOOLS_MIRROR": "http://mirror.example/tools/"}
    assert release_base(TOOLS["helm"], everything) == "http://mirror.example/tools/get.helm.sh"
    assert release_base(TOOLS["kind"], everything) == \
        "http://mirror.example/tools/github.com/kubernetes-sigs/kind/releases/download"
    own = {**everything, "MESHLAB_TOOLS_MIRROR_HELM": "https://proxy.example/helm/"}
    assert release(TOOLS["helm"], "v4.2.3", LINUX, own).url == \
        "https://proxy.example/helm/helm-v4.2.3-linux-amd64.tar.gz"
    assert release_base(TOOLS["kind"], own).startswith("http://mirror.example/tools/github.com")


def test_checksum_file_formats() -> None:
    digest = "ab" * 32
    assert expected_sha256(f"{digest}\n", "helm.tgz", "x") == digest
    assert expected_sha256(f"{digest.upper()}  kind-linux-amd64\n", "kind-linux-amd64", "x") \
        == digest
    assert expected_sha256(f"{digest} *kind-linux-amd64", "kind-linux-amd64", "x") == digest
    with pytest.raises(DownloadError, match="not a SHA-256 checksum file for kind-linux-amd64"):
        expected_sha256(f"{digest}  kind-darwin-arm64\n", "kind-linux-amd64", "x")
    with pytest.raises(DownloadError, match="not a SHA-256 checksum file"):
        expected_sha256("<html>Not Found</html>", "helm.tgz", "x")


def test_install_every_tool_verifies_and_records(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "tools"
    for name in TOOLS:
        mirror.publish(name)
    for name in TOOLS:
        done = install(name, root=root, host=LINUX, env=env_for(mirror))
        assert not done.reused and done.path == root / "bin" / name
        assert os.access(done.path, os.X_OK)
        said = subprocess.run([done.path, *TOOLS[name].version_args], capture_output=True,
                              text=True, timeout=10).stdout
        assert version(TOOLS[name].version_key) in said
        assert tool_path(name, root) == done.path
    manifest = read_manifest(root)
    helm = manifest["helm"]
    published = mirror.file(release(TOOLS["helm"], helm["version"], LINUX,
                                    env_for(mirror)).url).read_bytes()
    assert helm["sha256"] == hashlib.sha256(published).hexdigest()  # the archive, verified
    assert helm["binarySha256"] == hashlib.sha256((root / "bin" / "helm").read_bytes()
                                                  ).hexdigest()
    assert helm["url"].endswith("/get.helm.sh/helm-v4.2.3-linux-amd64.tar.gz")
    assert not list(root.glob(".partial-*"))


def test_reuse_and_force(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "tools"
    mirror.publish("kind")
    assert not install("kind", root=root, host=LINUX, env=env_for(mirror)).reused
    assert len(mirror.downloads()) == 1
    again = install("kind", root=root, host=LINUX, env=env_for(mirror))
    assert again.reused and len(mirror.requests) == 2  # checksum + binary, nothing more
    forced = install("kind", root=root, host=LINUX, env=env_for(mirror), force=True)
    assert not forced.reused and len(mirror.downloads()) == 2


def test_a_local_folder_as_mirror(mirror: Mirror, tmp_path: Path) -> None:
    """A file:// mirror (release files copied onto a USB stick or a shared folder) works."""
    mirror.publish("helm")
    done = install("helm", root=tmp_path / "tools", host=LINUX,
                   env={"MESHLAB_TOOLS_MIRROR": mirror.root.as_uri()})
    assert not done.reused and status("helm", tmp_path / "tools").ok
    assert mirror.requests == []
    with pytest.raises(DownloadError, match=r"kind-linux-amd64\.sha256sum: no such release"):
        install("kind", root=tmp_path / "tools", host=LINUX,
                env={"MESHLAB_TOOLS_MIRROR": mirror.root.as_uri()})


def test_two_installs_at_once_download_once(mirror: Mirror, tmp_path: Path) -> None:
    """The tools directory's lock: the second install waits, then reuses the first's."""
    mirror.publish("istioctl")
    results: list[bool] = []

    def run() -> None:
        results.append(install("istioctl", root=tmp_path / "tools", host=LINUX,
                               env=env_for(mirror)).reused)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False, True] and len(mirror.downloads()) == 1


def test_checksum_mismatch_installs_nothing(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "tools"
    mirror.publish("istioctl", checksum="0" * 64)
    with pytest.raises(DownloadError) as caught:
        install("istioctl", root=root, host=LINUX, env=env_for(mirror))
    message = str(caught.value)
    assert "does not match" in message and "0" * 64 in message and "\n" not in message
    assert "meshlab tools install istioctl --force" in message
    nothing_left(root, "istioctl")


def test_a_failed_force_keeps_the_installed_binary(mirror: Mirror, tmp_path: Path) -> None:
    """A failed --force leaves the working binary that was there."""
    root = tmp_path / "tools"
    mirror.publish("linkerd")
    first = install("linkerd", root=root, host=LINUX, env=env_for(mirror))
    before = first.path.read_bytes()
    mirror.publish("linkerd", says="edge-99.1.1")  # a re-published, different build
    with pytest.raises(DownloadError, match=r"reports 'edge-99\.1\.1', not edge-26\.7\.2"):
        install("linkerd", root=root, host=LINUX, env=env_for(mirror), force=True)
    assert first.path.read_bytes() == before and status("linkerd", root).ok


def test_missing_release_is_a_404_with_the_fix(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "tools"
    with pytest.raises(DownloadError) as caught:
        install("helm", root=root, host=LINUX, env=env_for(mirror))
    message = str(caught.value)
    assert "HTTP 404" in message and "helm-v4.2.3-linux-amd64.tar.gz.sha256" in message
    assert "cluster-setup/versions.env" in message and "MESHLAB_TOOLS_MIRROR" in message
    nothing_left(root, "helm")


def test_a_silent_server_times_out(mirror: Mirror, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tools"
    mirror.publish("kind")
    found = release(TOOLS["kind"], version("KIND_VERSION"), LINUX, env_for(mirror))
    mirror.slow.add(found.url.removeprefix(mirror.url))
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"no answer within 0.5 s.*HTTPS_PROXY"):
        install("kind", root=root, host=LINUX, env=env_for(mirror))
    assert time.monotonic() - started < SLOW_S
    nothing_left(root, "kind")


def test_an_archive_without_the_binary(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "tools"
    found = release(TOOLS["helm"], version("HELM_VERSION"), LINUX, env_for(mirror))
    body = tarball("helm", script("v4.2.3"))  # not at linux-amd64/helm
    mirror.file(found.url).parent.mkdir(parents=True)
    mirror.file(found.url).write_bytes(body)
    mirror.file(found.checksum_url).write_text(hashlib.sha256(body).hexdigest())
    with pytest.raises(DownloadError, match="has no file linux-amd64/helm"):
        install("helm", root=root, host=LINUX, env=env_for(mirror))
    nothing_left(root, "helm")


def test_unsupported_platforms() -> None:
    assert host_platform("Linux", "x86_64") == LINUX
    assert host_platform("Darwin", "arm64") == Platform("darwin", "arm64")
    assert host_platform("Linux", "aarch64") == Platform("linux", "arm64")
    with pytest.raises(UnsupportedPlatform, match=r"Linux/riscv64.*embedded backend"):
        host_platform("Linux", "riscv64")
    with pytest.raises(UnsupportedPlatform, match="Windows/AMD64"):
        host_platform("Windows", "AMD64")


def test_cli_unsupported_arch_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MESHLAB_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.setattr("platform.machine", lambda: "riscv64")
    assert main(["tools", "install"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("meshlab: no build of kind")
    assert "riscv64" in err and "Traceback" not in err
    assert not (tmp_path / "tools" / "bin" / "kind").exists()


def test_tool_path_and_states(mirror: Mirror, tmp_path: Path) -> None:
    """What the kind backend will call: a clear ToolMissing naming the command to run."""
    root = tmp_path / "tools"
    with pytest.raises(ToolMissing, match=r"kind v0\.32\.0 is not installed.*run `meshlab "
                       r"tools install kind`"):
        tool_path("kind", root)
    mirror.publish("kind")
    path = install("kind", root=root, host=LINUX, env=env_for(mirror)).path
    path.write_bytes(path.read_bytes() + b"# edited\n")
    assert status("kind", root).state == "modified"
    with pytest.raises(ToolMissing, match="meshlab tools install kind --force"):
        tool_path("kind", root)
    assert not install("kind", root=root, host=LINUX, env=env_for(mirror)).reused
    manifest = read_manifest(root)
    manifest["kind"]["version"] = "v0.1.0"
    (root / "manifest.json").write_text(json.dumps({"tools": manifest}))
    assert status("kind", root).state == "outdated"
    with pytest.raises(ToolMissing, match=r"kind v0\.1\.0 is installed.*pins v0\.32\.0"):
        tool_path("kind", root)


def test_a_binary_found_in_place(mirror: Mirror, tmp_path: Path) -> None:
    """A binary put in bin/ by hand is kept if it reports the pinned version (no download),
    and replaced if not."""
    root = tmp_path / "tools"
    (root / "bin").mkdir(parents=True)
    helm = root / "bin" / "helm"
    helm.write_bytes(script("v4.2.3"))
    helm.chmod(0o755)
    assert status("helm", root).state == "unrecorded"
    assert install("helm", root=root, host=LINUX, env=env_for(mirror)).reused
    assert mirror.requests == [] and status("helm", root).ok
    kind = root / "bin" / "kind"
    kind.write_bytes(script("kind v0.20.0 go1.20 linux/amd64"))
    kind.chmod(0o755)
    mirror.publish("kind")
    assert not install("kind", root=root, host=LINUX, env=env_for(mirror)).reused
    assert "v0.32.0" in subprocess.run([kind, "version"], capture_output=True, text=True,
                                       timeout=10).stdout
    linkerd = root / "bin" / "linkerd"
    linkerd.write_text("not a program")  # not executable: replaced, not an error
    mirror.publish("linkerd")
    assert not install("linkerd", root=root, host=LINUX, env=env_for(mirror)).reused
    (root / "manifest.json").write_text("{not json")
    assert status("kind", root).state == "unrecorded"  # checked again by the next install


def meshlab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labs.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_cli_install_list_path(mirror: Mirror, tmp_path: Path) -> None:
    """The commands as a user runs them, for this host's platform."""
    for name in TOOLS:
        mirror.publish(name, host_platform())
    env = {**env_for(mirror), "MESHLAB_TOOLS_DIR": str(tmp_path / "tools")}
    first = meshlab("tools", "install", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("installed (SHA-256 verified)") == 4
    assert f"export PATH={tmp_path / 'tools' / 'bin'}:$PATH" in first.stdout
    again = meshlab("tools", "install", "kind", "helm", env=env)
    assert again.returncode == 0 and again.stdout.count("already installed") == 2
    listed = meshlab("tools", "list", env=env)
    assert "client version: 1.30.5" in listed.stdout and listed.stdout.count(" ok ") == 4
    as_json = json.loads(meshlab("tools", "list", "-o", "json", env=env).stdout)
    assert {tool["name"]: tool["state"] for tool in as_json["tools"]} == dict.fromkeys(
        TOOLS, "ok")
    path = meshlab("tools", "path", "linkerd", env=env)
    assert path.stdout.strip() == str(tmp_path / "tools" / "bin" / "linkerd")
    unknown = meshlab("tools", "path", "kubectl", env=env)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == ("meshlab: no tool 'kubectl': meshlab installs kind, "
                                      "istioctl, linkerd, helm")
    missing = meshlab("tools", "install", "kind", "--force",
                      env={**env, "MESHLAB_TOOLS_MIRROR": mirror.url + "/nothing"})
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert meshlab("tools", "path", "kind", env=env).returncode == 0  # still installed
