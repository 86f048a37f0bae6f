"""The one table of what the generated ODE kernels take: per-trajectory buffers, scalars, launch integers.

The kernel signature (kernels/ode/writer.py), the device allocations and the launch arguments
(kernels/ode/triton_solvers.py) are all produced from these tables, so adding a buffer is one row
here plus the kernel lines that read or write it.

A buffer whose feature is off is passed as a one-element tensor the kernel never reads or writes
(the signature stays the same for every feature set).
Output buffers start NaN, so an element the kernel never wrote shows as such.
Features: adaptive (step-size controlled methods), lyapunov, params (some parameter varies across
rows), save_every, interp (t_eval), section (Poincaré), crossings (a section with max_saved > 0).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Buffer:
    """One array the step kernel reads and writes through its lanes' row indices."""

    name: str                    # DeviceState attribute and kernel local prefix; the argument is NAME
    dtype: str                   # "real" (the kernel's DT: float32/float64) or "int32"
    shape: tuple[str | int, ...]  # dims by name: B rows, n states, m free params, n_save, T times, K saved
    features: tuple[str, ...]    # all must be on for a real allocation (empty: always)
    fill: float | None           # initial value; None: prepare() supplies the array
    doc: str
    kernel_arg: str = ""         # the kernel argument, when not NAME

    @property
    def arg(self) -> str:
        """The kernel argument name."""
        return self.kernel_arg or self.name.upper()

    def needed(self, on: set[str]) -> bool:
        """Whether this run allocates it full size (otherwise one unused element)."""
        return all(f in on for f in self.features)


_NAN = float("nan")

# order = the step kernel's argument order (the launch passes them in this order too)
BUFFERS: tuple[Buffer, ...] = (
    Buffer("t", "real", ("B",), (), None, "time reached"),
    Buffer("h", "real", ("B",), ("adaptive",), _NAN, "next step size (set by the init kernel)"),
    Buffer("eprev", "real", ("B",), ("adaptive",), 1e-4, "last accepted error norm (PI controller)"),
    Buffer("status", "int32", ("B",), (), 0, "0 running, 1 done, 2 escaped, 3 step size collapsed"),
    Buffer("nacc", "int32", ("B",), (), 0, "accepted steps"),
    Buffer("nrej", "int32", ("B",), (), 0, "rejected steps"),
    Buffer("tblow", "real", ("B",), (), _NAN, "blow-up time"),
    Buffer("wlen", "real", ("B",), (), 0.0, "length of the final window covered so far"),
    Buffer("u", "real", ("B", "n"), (), None, "state"),
    Buffer("f", "real", ("B", "n"), ("adaptive",), _NAN, "F(u), the FSAL stage"),
    Buffer("v", "real", ("B", "n"), ("lyapunov",), None, "tangent vector (twin state for Rosenbrock)"),
    Buffer("fv", "real", ("B", "n"), ("adaptive", "lyapunov"), _NAN, "the perturbation's FSAL stage"),
    Buffer("p", "real", ("B", "m"), ("params",), None, "free (not folded) parameters"),
    Buffer("wmin", "real", ("B", "n"), (), None, "running minimum over the final window"),
    Buffer("wmax", "real", ("B", "n"), (), None, "running maximum over the final window"),
    Buffer("wsum", "real", ("B", "n"), (), 0.0, "trapezoid time integral over the final window"),
    Buffer("lsum", "real", ("B",), ("lyapunov",), 0.0, "sum of log growth factors"),
    Buffer("ltime", "real", ("B",), ("lyapunov",), 0.0, "time those growth factors cover"),
    Buffer("speed0", "real", ("B",), ("lyapunov",), _NAN, "|F(u)| at the window's first counted step"),
    Buffer("saves", "real", ("B", "n_save", "n"), ("save_every",), _NAN, "every k-th accepted state", "SAVE"),
    Buffer("save_t", "real", ("B", "n_save"), ("save_every",), _NAN, "their times"),
    Buffer("t_eval", "real", ("T", "B"), ("interp",), None, "requested times, [T] when shared by all rows",
           "TEVAL"),
    Buffer("ie", "int32", ("B",), ("interp",), 0, "index of the next requested time"),
    Buffer("ys", "real", ("T", "n", "B"), ("interp",), _NAN, "states at the requested times (time-major)"),
    Buffer("ncross", "int32", ("B",), ("section",), 0, "section crossings"),
    Buffer("ret", "real", ("B", 5), ("section",), None, "last crossing time, return-time mean, M2, min, max"),
    Buffer("cross", "real", ("K", "n", "B"), ("crossings",), _NAN, "the first K crossing states"),
    Buffer("cross_t", "real", ("K", "B"), ("crossings",), _NAN, "their times"),
)
BY_NAME = {b.name: b for b in BUFFERS}
# what the init kernel (F(u0) and the starting step of adaptive methods) takes, in its argument order
INIT_BUFFERS: tuple[str, ...] = ("u", "f", "v", "fv", "p", "h")


@dataclass(frozen=True)
class Scalar:
    """One entry of the kernel's real scalar vector S (read as tl.load(S + index))."""

    name: str
    feature: str | None   # loaded by the step kernel only when this feature is on (None: always)
    doc: str


SCALARS: tuple[Scalar, ...] = (
    Scalar("t0", None, "start time"),
    Scalar("t1", None, "end time"),
    Scalar("dt", None, "fixed step (0 for adaptive methods)"),
    Scalar("rtol", None, "relative tolerance"),
    Scalar("atol", None, "absolute tolerance"),
    Scalar("bound", None, "blow-up bound on max |u|"),
    Scalar("ws", None, "start of the final window"),
    Scalar("d0", None, "size of the Lyapunov perturbation"),
    Scalar("hmin", None, "smallest step, relative to max(|t|, 1)"),
    Scalar("teps", None, "tolerance on reaching t1"),
    Scalar("sep_floor", None, "rounding floor of a twin's separation, relative to |u|"),
    Scalar("lev", "section", "section level"),
    Scalar("smin", "section", "crossings before this time are ignored"),
)
SCALAR_INDEX = {s.name: j for j, s in enumerate(SCALARS)}

# integer launch arguments (not specialised on: a new value does not recompile), in argument order
INTS: tuple[str, ...] = ("CHUNK", "MAX_STEPS", "NSTEPS", "SAVE_EVERY", "N_SAVE", "TSI", "TSR", "NT", "NCB", "NB")


def load_scalar(name: str) -> str:
    """The kernel line reading scalar `name` from S."""
    return f"{name} = tl.load(S + {SCALAR_INDEX[name]})"


def step_signature() -> str:
    """The step kernel's parameter list."""
    return ", ".join(["IDX", "NW", "S", *(b.arg for b in BUFFERS), *INTS,
                      "BLOCK: tl.constexpr", "DT: tl.constexpr", "INNER: tl.constexpr"])


def init_signature() -> str:
    """The init kernel's parameter list."""
    return ", ".join(["IDX", "NW", "S", *(BY_NAME[b].arg for b in INIT_BUFFERS),
                      "BLOCK: tl.constexpr", "DT: tl.constexpr"])


def step_decorator() -> str:
    """@triton.jit for the step kernel: the row count and the integers are not specialised on."""
    return "@triton.jit(do_not_specialize=[" + ", ".join(f'"{x}"' for x in ("NW", *INTS)) + "])"
