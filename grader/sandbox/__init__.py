"""Each graded submission's kernel — and, in replay mode, its cluster's daemon, which runs
what the submission asks of it — in a sandbox of its own: a uid of its own, a mount namespace
with only the course code, its own cluster's files and a scratch directory, processes of
other uids invisible, resource limits (see jail.py for the command line) and, in replay mode,
a network namespace of its own (netns.py)."""
