"""Transfer-entropy kernels. `reference.py` is the float64 brute-force oracle the fast paths are tested against."""
