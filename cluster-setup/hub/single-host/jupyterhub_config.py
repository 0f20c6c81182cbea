"""JupyterHub for a meshlab workshop on one host (run as root: `jupyterhub -f
cluster-setup/hub/single-host/jupyterhub_config.py`; see cluster-setup/README.md, "JupyterHub").

- Who: every participant is a Unix user on this host, listed in the roster
  (MESHLAB_HUB_ROSTER, the `meshlab board` roster; each row's name is the Unix user name),
  and logs in with their system password (PAMAuthenticator). Instructors
  (MESHLAB_HUB_INSTRUCTORS, comma-separated Unix users) are hub admins.
- Servers: grader.hub.spawner.MeshlabSpawner, LocalProcessSpawner running each server as its own
  user: their workspace (~/meshlab/course) and their own embedded cluster (MESHLAB_CLUSTER=<user>,
  state in ~/.meshlab), started with the server and stopped with it. Memory and tasks are
  limited per server by a cgroup (mem_limit: MESHLAB_HUB_MEM_LIMIT); cpu_limit is advisory.
- Grading: nbgrader's exchange in MESHLAB_HUB_ROOT/exchange (release/fetch/submit/collect);
  the instructor releases and collects with `nbgrader` and grades with `sudo meshlab grade`.

The logic lives in grader/hub/ (spawner, exchange) and labs/hub/ (the server); this file only
reads the environment.
"""

import os
import sys
from pathlib import Path

from grader.hub.exchange import prepare
from labs.cluster.roster import RosterError, load_roster

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - injected by traitlets

# -- who may log in: the roster's participants (Unix users) and the instructors ----------
if not os.environ.get("MESHLAB_HUB_ROSTER"):
    sys.exit("meshlab hub: set MESHLAB_HUB_ROSTER to the roster file (student,cluster[,state_dir]"
             " rows; each student is a Unix user of this host)")
try:
    participants = {s.name for s in load_roster(os.environ["MESHLAB_HUB_ROSTER"])}
except RosterError as exc:
    sys.exit(f"meshlab hub: {exc}")

hub_root = Path(os.environ.get("MESHLAB_HUB_ROOT", "/srv/meshlab-hub"))
state = hub_root / "state"  # the hub's own database and cookie secret: root only
state.mkdir(parents=True, exist_ok=True, mode=0o700)

# -- network: the public proxy port; the hub's and the proxy's API on loopback -------------
c.JupyterHub.ip = os.environ.get("MESHLAB_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("MESHLAB_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("MESHLAB_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = (
    f"http://127.0.0.1:{os.environ.get('MESHLAB_HUB_PROXY_API_PORT', '8001')}")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")

# -- how they log in: their system password -------------------------------------------------
c.JupyterHub.authenticator_class = "pam"
instructors = {n.strip() for n in os.environ.get("MESHLAB_HUB_INSTRUCTORS", "").split(",")
               if n.strip()}
c.Authenticator.allowed_users = participants | instructors
c.Authenticator.admin_users = instructors

# -- each server: its user, workspace, cluster and limits ----------------------------------
c.JupyterHub.spawner_class = "grader.hub.spawner.MeshlabSpawner"
c.MeshlabSpawner.hub_config_dir = str(prepare(hub_root))
c.Spawner.mem_limit = os.environ.get("MESHLAB_HUB_MEM_LIMIT", "3G")
c.Spawner.cpu_limit = float(os.environ.get("MESHLAB_HUB_CPU_LIMIT", "2"))  # advisory
c.Spawner.start_timeout = 180  # the cluster starts before the server does
c.Spawner.http_timeout = 120
