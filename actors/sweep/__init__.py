"""sweep: ODE ensembles over parameter grids, attractor classification and Lyapunov exponents.

engine.py and models.py import no Ray; actor.py and pool.py wrap them.
"""
