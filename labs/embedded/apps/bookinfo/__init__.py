"""Twins of Istio's Bookinfo sample: productpage, details, reviews (v1/v2/v3) and ratings.

Each answers like the real service (same paths, JSON, HTML markers, timeouts and forwarded headers),
because the course's labs and graders look at exactly those.
"""
