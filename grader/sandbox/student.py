"""One student's sandbox for one grading run: its uids, its scratch directory, its network
namespace (replay mode), and what its kernel and (in replay mode) its cluster's daemon may see.
Saved as JSON for the nbgrader process (named by $MESHLAB_SANDBOX), which starts the kernel
through it.

Three uids, so that no part of a submission can stand in for another: the kernel's; the replay
daemon's (the API server, controllers, containers — the course's own code); and the one the
daemon runs `kubectl exec` commands as (runtime/exec_user.py). The kernel and its pods' execs
can neither signal the daemon nor read its state directory (its TLS key above all), so a
submission cannot replace its API server with one of its own to forge its verdicts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from grader.sandbox.accounts import hand_over
from grader.sandbox.jail import Bind, Jail, Limits
from labs.cluster import ClusterAddress, kubectl_binary
from labs.embedded.paths import ClusterPaths

SANDBOX_ENV = "MESHLAB_SANDBOX"
# What a kernel needs of a live embedded cluster it does not own: endpoint, CA, credentials.
CLUSTER_FILES = ("endpoint", "ca_cert", "kubeconfig")


@dataclass(frozen=True)
class StudentSandbox:
    uid: int  # the kernel's, and whatever it starts
    daemon_uid: int  # replay: the cluster's daemon and containers
    exec_uid: int  # replay: what `kubectl exec` runs in its pods
    scratch: str  # root's (0700): the kernel's work/ (the uid's), logs, connection file
    cluster: str | None = None  # replay: the cluster the grader runs for this student …
    state_root: str | None = None  # … and its state root (the daemon's)
    kernel_files: tuple[tuple[str, str], ...] = ()  # (copy, where the kernel sees it)
    limits: Limits = field(default_factory=Limits)
    netns: str | None = None  # replay: its own network namespace (live: the host's network)
    cgroup_procs: tuple[str, ...] = ()  # its cgroup (cgroup.py); none where none can be made

    @property
    def work(self) -> Path:
        """The kernel's working directory and HOME, bound where the notebook is."""
        return Path(self.scratch) / "work"

    @property
    def connection_file(self) -> Path:
        return Path(self.scratch) / "kernel.json"

    @property
    def daemon_log(self) -> Path:
        return Path(self.scratch) / "daemon.log"

    @property
    def verifier_kubeconfig(self) -> Path:
        """Credentials for the grader's own checks, copied before any student code ran."""
        return Path(self.scratch) / "verifier.kubeconfig"

    @classmethod
    def create(cls, uids: tuple[int, ...], scratch: Path, netns: str | None = None,
               cgroup_procs: tuple[str, ...] = ()) -> StudentSandbox:
        """`uids`: the kernel's, the daemon's, the execs'."""
        (scratch / "work").mkdir(mode=0o700, parents=True)
        hand_over(scratch / "work", uids[0])
        kernel, daemon, execs = uids
        return cls(kernel, daemon, execs, str(scratch), netns=netns, cgroup_procs=cgroup_procs)

    @property
    def uids(self) -> tuple[int, int, int]:
        return self.uid, self.daemon_uid, self.exec_uid

    def kernel_jail(self, workdir: Path) -> Jail:
        """Reads the course code and copies of its cluster's endpoint, CA and credentials;
        writes its work dir only."""
        binds = [Bind(str(self.work), str(workdir), writable=True),
                 Bind.same(self.connection_file),
                 *[Bind(copy, where) for copy, where in self.kernel_files]]
        return Jail(self.uid, tuple(binds), self.limits, self.netns,
                    cgroup_procs=self.cgroup_procs)

    def daemon_jail(self) -> Jail:
        """The replay cluster's daemon: its state root writable; keeps what it needs to run
        `kubectl exec` commands as `exec_uid` and to stop them."""
        assert self.state_root
        return Jail(self.daemon_uid, (Bind.same(self.state_root, writable=True),), self.limits,
                    self.netns, keep=("setuid", "setgid", "kill"),
                    cgroup_procs=self.cgroup_procs)

    def with_cluster_copies(self, paths: ClusterPaths) -> StudentSandbox:
        """The kernel gets copies of an embedded cluster's endpoint, CA and credentials, seen
        where the cluster keeps them — never the state directory itself."""
        creds = self._credentials_dir()
        files: list[tuple[str, str]] = []
        for name in CLUSTER_FILES:
            original = getattr(paths, name)
            if original.exists():
                shutil.copyfile(original, creds / original.name)
                files.append((str(creds / original.name), str(original)))
        hand_over(creds, self.uid)
        return replace(self, kernel_files=tuple(files))

    def _credentials_dir(self) -> Path:
        creds = Path(self.scratch) / "credentials"
        creds.mkdir(mode=0o700)
        return creds

    def with_live_cluster(self, target: ClusterAddress) -> tuple[StudentSandbox, ClusterAddress]:
        """Copies of the one cluster's credentials for the kernel (a roster's kubeconfig may
        hold every student's contexts: only this context is copied)."""
        if not target.context:
            return self.with_cluster_copies(
                ClusterPaths.of(target.cluster, target.state_dir)), target
        creds = self._credentials_dir()
        kubeconfig = target.kubeconfig or str(Path("~/.kube/config").expanduser())
        view = subprocess.run(
            [kubectl_binary(), f"--kubeconfig={kubeconfig}", "config", "view", "--minify",
             "--flatten", f"--context={target.context}"],
            capture_output=True, text=True, timeout=60, check=True)
        (creds / "kubeconfig").write_text(view.stdout)
        hand_over(creds, self.uid)
        return (replace(self, kernel_files=((str(creds / "kubeconfig"), kubeconfig),)),
                replace(target, kubeconfig=kubeconfig))

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle)

    @classmethod
    def load(cls, path: str | Path) -> StudentSandbox:
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "kernel_files": tuple(tuple(f) for f in data["kernel_files"]),
                      "cgroup_procs": tuple(data["cgroup_procs"]),
                      "limits": Limits(**data["limits"])})


def with_port(kubeconfig: str, port: int) -> str:
    """`kubeconfig` (one embedded cluster's) pointing at `port` on loopback."""
    return re.sub(r"https://127\.0\.0\.1:\d+", f"https://127.0.0.1:{port}", kubeconfig)
