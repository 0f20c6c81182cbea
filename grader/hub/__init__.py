"""The instructor's side of meshlab on JupyterHub, one host: the spawner that runs each
participant's server as their own Unix user inside a cgroup that enforces its limits
(spawner.py, with the grader's sandbox cgroups) and nbgrader's shared exchange (exchange.py).
Here, not in `labs`, because `labs` reaches `grader` only through entry points; the server each
participant runs is labs/hub/singleuser.py."""
