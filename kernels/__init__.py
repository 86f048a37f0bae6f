"""Numerical kernels. Each GPU kernel has a torch/numpy reference twin that CI runs on the CPU."""
