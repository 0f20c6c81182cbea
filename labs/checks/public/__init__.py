"""Public checks, one module per lab (`day1/mtls.py` holds `day1.mtls.*`)."""
