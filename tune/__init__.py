"""Ray Tune studies on the engines: `fit_ode` estimates ODE model parameters from noisy trajectories."""
