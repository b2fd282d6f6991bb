"""Iterative solvers with one shared signature.

Every solver is called as ``solver(operator, data, *, x0, n_iter, relaxation, positivity,
callback, tol, device, dtype, **specific)`` and returns a :class:`SolverResult`. They see the
operator only through ``forward``/``adjoint``/``domain_shape``/``range_shape`` (ART also
needs ``row_form()``), so later methods reuse them on their own operators.

==========  ===================================================================
``sirt``    simultaneous iterative reconstruction (all tilts per update)
``sart``    simultaneous algebraic reconstruction (one tilt per update, eq. 19)
``art``     ART / Kaczmarz row action (eq. 1)
``cgls``    conjugate gradient least squares
``tv_admm`` TV / anisotropic-TV / L1 regularised least squares by ADMM + CG
==========  ===================================================================
"""

from cryowedge.solvers._common import Callback, IterationInfo, SolverResult
from cryowedge.solvers.admm import REGULARIZERS, regularizer_value, tv_admm
from cryowedge.solvers.algebraic import art, sart, sirt
from cryowedge.solvers.callbacks import (
    CallbackList,
    HistoryCallback,
    ProgressCallback,
    StoreIterates,
)
from cryowedge.solvers.cgls import cgls

#: Solvers by their ``--method`` name. The method registry (:mod:`cryowedge.config.registry`)
#: names the same functions as the ``solver`` of each iterative method; a test checks that the
#: two agree (this layer does not import the config layer).
SOLVERS = {"sirt": sirt, "sart": sart, "art": art, "cgls": cgls, "tv": tv_admm}

__all__ = [
    "SOLVERS",
    "REGULARIZERS",
    "Callback",
    "CallbackList",
    "HistoryCallback",
    "IterationInfo",
    "ProgressCallback",
    "SolverResult",
    "StoreIterates",
    "art",
    "cgls",
    "regularizer_value",
    "sart",
    "sirt",
    "tv_admm",
]
