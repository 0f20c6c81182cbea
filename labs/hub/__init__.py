"""meshlab on JupyterHub, the participant's side: the command each participant's server runs
(singleuser.py), which starts their own embedded cluster with the server and stops it with
the server. The hub's spawner and nbgrader exchange are grader/hub/; the configuration,
cluster-setup/hub/single-host/jupyterhub_config.py, only wires them together."""
