"""The pinned tools in a project-local bin directory: install (download, verify the published
SHA-256, unpack, check the version, then one atomic rename), reuse, and find them.

Layout, under `<repo>/.tools` (or `$MESHLAB_TOOLS_DIR`; .gitignore keeps it out of git):
`bin/<tool>`, and `manifest.json` recording per tool the version, the verified SHA-256 of the
download, the SHA-256 of the installed binary, its URL and platform. A tool is reused when the
manifest says it is the pinned version and the binary still has the recorded digest. Downloads
go to a `.partial-*` folder beside `bin/`, so an interrupted install leaves nothing in `bin/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from labs.setup.download import (
    DownloadError,
    expected_sha256,
    fetch_file,
    fetch_text,
    sha256_of,
)
from labs.setup.releases import TOOLS, Platform, Release, Tool, host_platform, release
from labs.versions import version

TOOLS_DIR_ENV = "MESHLAB_TOOLS_DIR"
DEFAULT_TOOLS_DIR = Path(__file__).resolve().parents[2] / ".tools"
VERSION_TIMEOUT_S = 15.0
LOCK_TIMEOUT_S = 900.0  # longer than one install's downloads (labs/setup/download.py DEADLINE_S)
INSTALL_HINT = "meshlab tools install"


class ToolsError(RuntimeError):
    """An install failed or a tool is not usable; the message is one line with the fix."""


class ToolMissing(ToolsError):
    """A tool is not installed at its pinned version."""


def tools_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(TOOLS_DIR_ENV) or DEFAULT_TOOLS_DIR).expanduser()


def tool(name: str) -> Tool:
    if name not in TOOLS:
        raise ToolsError(f"no tool {name!r}: meshlab installs {', '.join(TOOLS)}")
    return TOOLS[name]


def pinned(name: str) -> str:
    return version(tool(name).version_key)


@dataclass(frozen=True)
class ToolStatus:
    """What is in the bin directory for one tool, against its pinned version."""

    name: str
    pinned: str
    path: Path
    state: str  # ok | missing | outdated | modified | unrecorded
    recorded: dict[str, str] | None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def fix(self) -> str:
        return f"{INSTALL_HINT} {self.name}" + (" --force" if self.state == "modified" else "")

    def describe(self) -> str:
        recorded = (self.recorded or {}).get("version")
        return {
            "ok": f"{self.name} {self.pinned} at {self.path}",
            "missing": f"{self.name} {self.pinned} is not installed in {self.path.parent}",
            "outdated": f"{self.name} {recorded} is installed in {self.path.parent}, but "
                        f"cluster-setup/versions.env pins {self.pinned}",
            "modified": f"{self.path} changed since meshlab installed {self.name} {recorded}",
            "unrecorded": f"{self.path} was not installed by meshlab (install keeps it if it "
                          f"reports {self.pinned})",
        }[self.state]

    def problem(self) -> str:
        """Why the tool cannot be used, and the command that fixes it."""
        return f"{self.describe()}: run `{self.fix}`"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.pinned, "path": str(self.path),
                "state": self.state, "installed": (self.recorded or {}).get("version")}


def _manifest_path(root: Path) -> Path:
    return root / "manifest.json"


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """Per tool, what was installed; {} when there is no manifest or it is unreadable (then
    every tool present counts as unrecorded, and install checks it again)."""
    try:
        data = json.loads(_manifest_path(root).read_text())
    except (OSError, ValueError):
        return {}
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, dict):
        return {}
    return {name: entry for name, entry in tools.items() if isinstance(entry, dict)}


def _write_manifest(root: Path, tools: dict[str, dict[str, str]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=root)
    with os.fdopen(fd, "w") as out:
        json.dump({"tools": tools}, out, indent=1, sort_keys=True)
        out.write("\n")
    os.replace(tmp, _manifest_path(root))


def status(name: str, root: Path | None = None) -> ToolStatus:
    root = tools_dir() if root is None else root
    want = pinned(name)
    path = root / "bin" / name
    recorded = read_manifest(root).get(name)
    if not path.is_file():
        state = "missing"
    elif recorded is None:
        state = "unrecorded"
    elif recorded.get("version") != want:
        state = "outdated"
    elif not _unchanged(path, recorded):
        state = "modified"
    else:
        state = "ok"
    return ToolStatus(name, want, path, state, recorded)


def _fingerprint(path: Path) -> dict[str, str]:
    """The installed binary's digest, plus size and mtime so that a later check can skip
    hashing (istioctl is about 100 MB) when neither changed."""
    info = path.stat()
    return {"binarySha256": sha256_of(path), "size": str(info.st_size),
            "mtimeNs": str(info.st_mtime_ns)}


def _unchanged(path: Path, recorded: dict[str, str]) -> bool:
    info = path.stat()
    if (recorded.get("size"), recorded.get("mtimeNs")) == (str(info.st_size),
                                                            str(info.st_mtime_ns)):
        return True
    return recorded.get("binarySha256") == sha256_of(path)


def tool_path(name: str, root: Path | None = None) -> Path:
    """The installed binary of `name` at its pinned version, or ToolMissing saying which
    `meshlab tools install` command fixes it. What the kind backend runs its tools through."""
    found = status(name, root)
    if not found.ok:
        raise ToolMissing(found.problem())
    return found.path


def reported_version(binary: Path, name: str) -> str:
    """What the binary's own version command prints (first line), for a check and for
    `meshlab tools list`."""
    try:
        done = subprocess.run([str(binary), *tool(name).version_args], capture_output=True,
                              text=True, timeout=VERSION_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ToolsError(f"`{binary} {' '.join(tool(name).version_args)}` did not answer within "
                         f"{VERSION_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise ToolsError(f"cannot run {binary} ({exc.strerror}): is it a build for another "
                         "OS or CPU? Check MESHLAB_TOOLS_MIRROR and run "
                         f"`{INSTALL_HINT} {name} --force`") from None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else ""


def _says(binary: Path, name: str) -> str:
    """The version line, or "" for a file that does not run (then it is replaced)."""
    try:
        return reported_version(binary, name)
    except ToolsError:
        return ""


def _reports(text: str, want: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(want)}(?![\w.-])", text) is not None


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    path: Path
    reused: bool


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One install at a time per tools directory (two terminals, or a workshop script)."""
    root.mkdir(parents=True, exist_ok=True)
    give_up = time.monotonic() + LOCK_TIMEOUT_S
    with (root / ".lock").open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise ToolsError(f"another `{INSTALL_HINT}` has held {root / '.lock'} for "
                                     f"{LOCK_TIMEOUT_S:g} s: wait for it, or stop it") from None
                time.sleep(0.2)
        yield


def install(name: str, *, force: bool = False, root: Path | None = None,
            host: Platform | None = None, env: Mapping[str, str] | None = None) -> Installed:
    """Install `name` at its pinned version unless it is there already (`force`: fetch again).
    Raises ToolsError (or DownloadError, UnsupportedPlatform) with a one-line fix."""
    root = tools_dir(env) if root is None else root
    want = pinned(name)
    with _locked(root):
        for stale in root.glob(".partial-*"):  # left by a killed install; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(".manifest-*"):
            stale.unlink(missing_ok=True)
        current = status(name, root)
        if not force and current.ok:
            return Installed(name, want, current.path, reused=True)
        if not force and current.state == "unrecorded" and _reports(
                _says(current.path, name), want):
            _record(root, name, {"version": want, "source": "found in place",
                                 **_fingerprint(current.path)})
            return Installed(name, want, current.path, reused=True)
        target = host or host_platform()
        found = release(tool(name), want, target, env)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        try:
            binary, archive_sha = _download(found, partial)
            installed = root / "bin" / name
            installed.parent.mkdir(exist_ok=True)
            os.replace(binary, installed)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        _record(root, name, {"version": want, "sha256": archive_sha, "url": found.url,
                             "platform": str(target), **_fingerprint(installed)})
        return Installed(name, want, installed, reused=False)


def _record(root: Path, name: str, entry: dict[str, str]) -> None:
    tools = read_manifest(root)
    tools[name] = entry
    _write_manifest(root, tools)


def _download(found: Release, partial: Path) -> tuple[Path, str]:
    """Fetch and verify `found` into `partial`; return the runnable binary there and the
    verified digest of the download."""
    want = expected_sha256(fetch_text(found.checksum_url), found.asset, found.checksum_url)
    download = partial / found.asset
    got = fetch_file(found.url, download)
    if got != want:
        raise DownloadError(
            f"{found.url}: SHA-256 {got} does not match {want} published at "
            f"{found.checksum_url}: the download is corrupt or the mirror is stale; nothing "
            f"was installed. Run `{INSTALL_HINT} {found.tool} --force` to try again")
    binary = partial / found.tool
    if found.member is None:
        download.rename(binary)
    else:
        _extract(download, found.member, binary, found.url)
    binary.chmod(0o755)
    said = reported_version(binary, found.tool)
    if not _reports(said, found.version):
        raise DownloadError(f"{found.url}: the binary reports {said!r}, not {found.version}: "
                            "the release (or mirror) holds another version; nothing was "
                            "installed")
    return binary, got


def _extract(archive: Path, member: str, dest: Path, url: str) -> None:
    """Copy one regular file out of a .tar.gz (by its exact name: nothing else is written)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            entry = tar.getmember(member)
            source = tar.extractfile(entry) if entry.isfile() else None
            if source is None:
                raise KeyError(member)
            with source, dest.open("wb") as out:
                shutil.copyfileobj(source, out)
    except KeyError:
        raise DownloadError(f"{url}: the archive has no file {member}; the release layout "
                            "changed, or the mirror holds another file") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DownloadError(f"{url}: cannot unpack ({exc}); run "
                            f"`{INSTALL_HINT} --force` to fetch it again") from None
