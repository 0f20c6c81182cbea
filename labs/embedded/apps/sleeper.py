"""Twin of a client image whose container only sleeps (curlimages/curl runs `sleep infinity`).

It stays alive until SIGTERM (or SIGINT) and then exits 0, so the pod is Running; learners
`kubectl exec` the host's real `curl` with the pod's network path.

    python -m labs.embedded.apps.sleeper
"""

from __future__ import annotations

import signal

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.sigwait(STOP_SIGNALS)


if __name__ == "__main__":
    main()
