"""Host set-up for the kind backend and for workshops: `meshlab tools` fetches the pinned
command-line tools (kind, istioctl, linkerd, helm) into a project-local bin directory, and
`meshlab preflight` says whether this host can run N student clusters, with the fix for each
problem. Nothing here runs for the embedded backend's `./run lab`: both commands are opt-in."""
