"""Linkerd on the embedded cluster: what Linkerd's control plane does (injection, identity, the
destination and policy controllers), over the shared data-plane machinery in labs/embedded/mesh/.
Envoy plays linkerd2-proxy's part, and says so wherever a learner could mistake it for the real
proxy.
"""
