"""Butcher tableaus the generated kernels unroll (published constants, float64).

Every tableau here is for an autonomous system u' = F(u; p), so the nodes c are not needed.
Explicit stages 0..S-1 use `a`; the new state is u + h * sum(b * k). Adaptive pairs are FSAL:
stage S is F(u_new), reused as stage 0 of the next step, and the error estimate is
h * sum(e * k) over all S + 1 stages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.integrate
from numpy.polynomial import Polynomial


@dataclass(frozen=True)
class Tableau:
    name: str
    a: tuple[tuple[float, ...], ...]    # row s holds a[s][0..s-1]
    b: tuple[float, ...]                # S weights
    e: tuple[float, ...] | None         # S + 1 error weights (None: fixed step)
    error_order: int = 4                # order of the embedded estimate (step-size exponent 1/(q+1))
    # continuous extension: row j holds the ascending coefficients of b_j(theta), so that
    # u(t + theta h) = u + h * sum_j b_j(theta) k_j over the S + 1 stages (None: no own interpolant)
    dense: tuple[tuple[float, ...], ...] | None = None
    kind: str = "explicit"              # explicit | rosenbrock (linearly implicit, uses the Jacobian)

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.e is not None


RK4 = Tableau("rk4", a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), e=None)
# RK4 has no interpolant of its own: the kernels use the cubic Hermite one through (u, F(u)) and
# (u_new, F(u_new)) (third order, one extra right-hand side per step, only in the modes that need it)

# Dormand–Prince 5(4), from scipy's RK45 so the torch twin, scipy and the kernels share one source.
_RK45 = scipy.integrate.RK45
DOPRI5 = Tableau("dopri5", a=tuple(tuple(float(x) for x in _RK45.A[s, :s]) for s in range(_RK45.n_stages)),
                 b=tuple(float(x) for x in _RK45.B), e=tuple(float(x) for x in _RK45.E),
                 # Hairer's 4th-order dense output, scipy's P: b_j(theta) = sum_m P[j, m] theta^(m+1)
                 dense=tuple((0.0,) + tuple(float(x) for x in row) for row in _RK45.P))

# Tsitouras 5(4) (Comput. Math. Appl. 62 (2011) 770), coefficients as in diffrax / OrdinaryDiffEq.
_TS_A = (
    (),
    (0.161,),
    (-0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943,
     0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569),
    (2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
     -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
     4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077),
    (5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
     -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
     7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
     -0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635),
    (5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
     -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
     8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
     -0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835,
     -0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206),
)
_TS_B = (0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
         0.01,
         0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
         1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
         -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
         2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841)
_TS_BHAT = (0.09468075576583945807478876255758922856117527357724631226139574065785592789071067303271,
            0.009183565540343253096776363936645313759813746240984095238905939532922955247253608687270,
            0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813,
            1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761,
            -2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702,
            1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089,
            1 / 66)


def _tsit5_dense() -> tuple[tuple[float, ...], ...]:
    """Tsitouras' continuous extension b_j(theta) (as OrdinaryDiffEq.jl / diffrax write it), expanded."""
    P = Polynomial
    roots = (P((0, -1.0530884977290216)) * P((-1.3299890189751412, 1)) * P((0.7139816917074209, -1.4364028541716351, 1)),
             P((0, 0, 0.1017)) * P((1.2949852507374631, -2.1966568338249754, 1)),
             P((0, 0, 2.490627285651252793)) * P((1.57803468208092486, -2.38535645472061657, 1)),
             P((0, 0, -16.54810288924490272)) * P((-1.21712927295533244, 1)) * P((-0.61620406037800089, 1)),
             P((0, 0, 47.37952196281928122)) * P((-1.203071208372362603, 1)) * P((-0.658047292653547382, 1)),
             P((0, 0, -34.87065786149660974)) * P((-1.2, 1)) * P((-0.666666666666666667, 1)),
             P((0, 0, 2.5)) * P((-1.0, 1)) * P((-0.6, 1)))
    return tuple(tuple(float(c) for c in np.pad(p.coef, (0, 6 - len(p.coef)))) for p in roots)


TSIT5 = Tableau("tsit5", a=_TS_A, b=_TS_B, e=tuple(b - bh for b, bh in zip(_TS_B + (0.0,), _TS_BHAT)),
                dense=_tsit5_dense())

# Rosenbrock23 (Shampine & Reichelt 1997, MATLAB's ode23s; OrdinaryDiffEq's Rosenbrock23): W = I - d h J,
# k1 = W^-1 F0, F1 = F(u + h/2 k1), k2 = W^-1 (F1 - k1) + k1, u_new = u + h k2, F2 = F(u_new),
# k3 = W^-1 (F2 - e32 (k2 - F1) - 2 (k1 - F0)), error h/6 (k1 - 2 k2 + k3) (third order: q = 2).
# Dense output u + h (theta (1 - theta) k1 + theta (theta - 2d) k2) / (1 - 2d).
ROS23_D = 1.0 / (2.0 + math.sqrt(2.0))
ROS23_E32 = 6.0 + math.sqrt(2.0)
ROSENBROCK23 = Tableau("rosenbrock23", a=(), b=(), e=(), error_order=2, kind="rosenbrock",
                       dense=((0.0, 1 / (1 - 2 * ROS23_D), -1 / (1 - 2 * ROS23_D)),
                              (0.0, -2 * ROS23_D / (1 - 2 * ROS23_D), 1 / (1 - 2 * ROS23_D))))

TABLEAUS = {t.name: t for t in (RK4, DOPRI5, TSIT5, ROSENBROCK23)}
