"""serve: Ray Serve front ends (HTTP) for the compute subsystems; sweep.py serves the ODE sweep engine."""
