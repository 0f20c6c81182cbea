"""Provisioning: a student's kind cluster (`meshlab cluster create|delete`) and a class's
environments from a roster (`meshlab workshop up|down|status`)."""
