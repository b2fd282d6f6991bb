"""Coordinate-network (implicit neural representation) reconstruction (docs/inr.md).

A network ``G_θ(x, y, z)`` is fitted so that the projections of its volume match the
measured tilt series, with an optional Fourier penalty on the missing wedge and above the
Crowther frequency (seeds/002, Van Veen). Layers: :mod:`~cryowedge.inr.networks` (the
networks), :mod:`~cryowedge.inr.regularizers` (pure tensor functions),
:mod:`~cryowedge.inr.fit` (the fit through :class:`~cryowedge.operators.TiltProjector`).

Quick use::

    from cryowedge.config.inr import InrConfig
    from cryowedge.inr import fit_inr

    result = fit_inr(tilt_series, geometry, InrConfig(lam_c=0.05, epochs=100),
                     volume_shape=(32, 128, 128))
    result.volume          # (z, y, x) float32, the input's units
"""

from cryowedge.inr.fit import (
    InrProblem,
    InrResult,
    Objective,
    batch_objective,
    fit_inr,
    inr_objective,
    plan_chunks,
    predict_volume,
    prepare_problem,
    read_checkpoint,
)
from cryowedge.inr.networks import (
    ACTIVATIONS,
    ENCODINGS,
    CoordinateNetwork,
    FourierFeatures,
    NetworkSpec,
    build_network,
    coordinate_grid,
)
from cryowedge.inr.regularizers import (
    CrowtherWedgePenalty,
    crowther_frequency,
    crowther_wedge_weights,
    total_variation,
)

__all__ = [
    "ACTIVATIONS",
    "ENCODINGS",
    "CoordinateNetwork",
    "CrowtherWedgePenalty",
    "FourierFeatures",
    "InrProblem",
    "InrResult",
    "NetworkSpec",
    "Objective",
    "batch_objective",
    "build_network",
    "coordinate_grid",
    "crowther_frequency",
    "crowther_wedge_weights",
    "fit_inr",
    "inr_objective",
    "plan_chunks",
    "predict_volume",
    "prepare_problem",
    "read_checkpoint",
    "total_variation",
]
