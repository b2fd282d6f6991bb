"""Typed configuration of ``cryowedge crm`` (constrained reconstruction model, issue 11).

The only home of the CRM commands' defaults, help texts and option names:

* :class:`CrmConfig` — how CRM is run: the solver and its iterations/relaxation, the support,
  the particle box cut from a tilt series, the baselines, the half maps, device, batching,
  seed. ``cryowedge crm`` (real data), ``crm run`` and ``crm compare`` (simulated data sets)
  read it; a ``--config`` YAML file holds any of its fields and the options given on the
  command line override it; the resolved model is saved as ``<out>/crm.yaml``.
* :class:`CrmSimulateConfig` — ``cryowedge crm simulate KIND``: the paper's data sets
  (Shepp–Logan, ribosome slice, 3D copies) and a particle tomogram.
* :class:`DemoCrmConfig` — the CRM panel of ``cryowedge demo``.

Per-solver and per-data-set defaults that depend on a choice (``n_iter`` of each solver, the
tilt scheme of each data set) are the tables :data:`SOLVER_DEFAULTS` and
:data:`SIMULATE_DEFAULTS`; a field left ``None`` takes its value from them. The default solver
``"auto"`` depends on the data (:data:`AUTO_SOLVER`: CRM-SIRT on noisy data, CRM-SART on
noise-free simulations; :meth:`CrmConfig.resolve_solver`).
Units: sizes in voxels (pixels in 2D), angles in degrees, lengths in Å (docs/conventions.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cryowedge.config.models import BaseConfig, cli

__all__ = [
    "AUTO_SOLVER",
    "BASELINE_NAMES",
    "CrmConfig",
    "CrmSimulateConfig",
    "DemoCrmConfig",
    "SIMULATE_DEFAULTS",
    "SIMULATE_KINDS",
    "SOLVER_DEFAULTS",
    "SOLVER_NAMES",
]

#: CRM solvers (:data:`cryowedge.crm.CRM_SOLVERS`).
SOLVER_NAMES = ("sart", "sirt", "kaczmarz", "tv")
#: ``(n_iter, relaxation)`` of each solver when not given: the paper's SART (20 iterations,
#: λ = 0.2) and the solvers' own defaults (``tests/test_crm_workflow.py`` checks they agree).
SOLVER_DEFAULTS: dict[str, tuple[int, float]] = {
    "sart": (20, 0.2),
    "sirt": (120, 1.0),
    "kaczmarz": (5, 1.0),
    "tv": (50, 1.0),
}
#: What ``solver="auto"`` resolves to, by whether the data are noisy (:meth:`CrmConfig.
#: resolve_solver`): CRM-SIRT averages the copies' noise, CRM-SART does not.
AUTO_SOLVER: dict[bool, str] = {True: "sirt", False: "sart"}
#: Averaging baselines (:data:`cryowedge.crm.BASELINES`).
BASELINE_NAMES = ("avg", "m-avg")

#: Simulated data sets of ``cryowedge crm simulate``.
SIMULATE_KINDS = ("shepp-logan", "ribosome", "3d", "tomogram")
#: Defaults of each data set (the paper's settings, §4; the 3D and tomogram ones at the small
#: scale of :mod:`cryowedge.crm.simulate`). ``size`` is the image side (2D) or box (3D).
SIMULATE_DEFAULTS: dict[str, dict[str, Any]] = {
    "shepp-logan": {"copies": 3, "size": 320, "tilt_range_deg": 50.0, "tilt_step_deg": 3.0,
                    "pixel_size_angstrom": 1.0, "background": "blocks"},
    "ribosome": {"copies": 3, "size": 200, "tilt_range_deg": 50.0, "tilt_step_deg": 3.0,
                 "pixel_size_angstrom": 1.0, "background": "noise"},
    "3d": {"copies": 20, "size": 48, "tilt_range_deg": 50.0, "tilt_step_deg": 5.0,
           "pixel_size_angstrom": 3.0, "background": "cell", "snr": 1.0},
    "tomogram": {"copies": 6, "size": 32, "tilt_range_deg": 60.0, "tilt_step_deg": 3.0,
                 "pixel_size_angstrom": 3.0, "background": "cell",
                 "tomogram_shape": (48, 96, 96)},
}


def _names(value: Any, allowed: tuple[str, ...], what: str) -> str:
    """A comma-separated list (or a YAML list) of ``allowed`` names, canonical; ``""`` = none."""
    if value is None:
        return ""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    if names in (["none"], ["no"]):
        return ""
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(
            f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)} "
            "(comma-separated), or none."
        )
    return ",".join(dict.fromkeys(names))


class CrmConfig(BaseConfig):
    """How CRM reconstructs a particle from its copies (``cryowedge crm``, ``crm run|compare``).

    The solver works on data divided by their standard deviation (``normalize``) and the
    particle is multiplied back, so ``tv_lambda`` is unit-free (docs/conventions.md,
    "Regularisation weights"); SART, SIRT and Kaczmarz are unaffected by the scale.
    """

    # ----------------------------------------------------------------- solver
    solver: Literal["auto", "sart", "sirt", "kaczmarz", "tv"] = Field(
        "auto", description="CRM solver: auto = sirt on noisy data (every measured tilt "
        "series; a simulated data set with --snr) and sart on noise-free simulated data; "
        "sart = CRM-SART (eq. 20-24, the particle handed from copy to copy; does not average "
        "noise); sirt = all copies at once (averages the copies' noise); kaczmarz = sparse "
        "Kaczmarz (Algorithm 1, small problems); tv = CRM with TV on the particle (ADMM)",
        json_schema_extra=cli("--solver", "--method"),
    )
    n_iter: int | None = Field(
        None, ge=1, description="iterations (default: sart 20, sirt 120, kaczmarz 5, tv 50)"
    )
    relaxation: float | None = Field(
        None, gt=0, lt=2, description="relaxation λ (default: sart 0.2, the paper's; others 1)"
    )
    positivity: bool = Field(False, description="clamp the particle and backgrounds at 0")
    order: Literal["random", "sequential"] = Field(
        "random", description="views within a copy (sart) or rows (kaczmarz): random "
        "permutation per visit (from --seed), or stack order"
    )
    particle: Literal["last", "mean"] = Field(
        "last", description="sart's particle: after the last copy's sweep (Algorithm 1), or "
        "the mean over the last iteration's copies (the authors' code)"
    )
    tv_lambda: float = Field(
        0.1, gt=0, description="TV weight of --solver tv, on data of unit std"
    )
    normalize: bool = Field(
        True, description="divide the data by their std before solving (the particle is "
        "scaled back), so --tv-lambda does not depend on the data's units"
    )
    # ----------------------------------------------------------------- support
    support_radius_px: float | None = Field(
        None, gt=0, description="radius of the spherical particle support, voxels (default: "
        "0.4 x box for real data; a data set's own support for crm run/compare)",
        json_schema_extra=cli("--support-radius"),
    )
    support_radius_angstrom: float | None = Field(
        None, gt=0, description="the support radius in Å instead of voxels",
        json_schema_extra=cli("--support-radius-angstrom"),
    )
    support_mask: str | None = Field(
        None, description="MRC mask of the particle (>= 0.5 inside), of the particle box "
        "(box_depth, box, box), instead of a sphere",
        json_schema_extra=cli("--mask"),
    )
    # ----------------------------------------------------------------- particles from a tilt series
    box_size: int | None = Field(
        None, ge=2, description="particle box edge, pixels of the tilt series: each copy is a "
        "box x box patch around the particle's projection on every tilt (required for real "
        "data; leave room around the support for the background)",
        json_schema_extra=cli("--box"),
    )
    box_depth: int | None = Field(
        None, ge=1, description="z size of each copy's volume, voxels (default: --box)"
    )
    thickness: int | None = Field(
        None, ge=1, description="z size (voxels) of the tomogram the STAR coordinates refer to "
        "(required for real data: the projected centre depends on it)"
    )
    tilt_axis_angle_deg: float | None = Field(
        None, allow_inf_nan=False, description="in-plane tilt-axis angle on the raw images, "
        "degrees (default: from the .mdoc, else 0)",
        json_schema_extra=cli("--tilt-axis-angle"),
    )
    coordinate_origin_px: float = Field(
        0.0, description="STAR coordinate of the first voxel's centre: 0 (NumPy, cryowedge) "
        "or 1 (1-based lists)", json_schema_extra=cli("--coordinate-origin"),
    )
    tomo_name: str | None = Field(
        None, description="keep only this tomogram's particles (rlnTomoName), when the list "
        "names several"
    )
    interpolation_order: int = Field(
        1, description="sub-pixel patch sampling: 1 bilinear, 3 cubic"
    )
    drop_outside: bool = Field(
        False, description="skip (with a warning) particles whose box leaves the tomogram or "
        "the detector, instead of stopping"
    )
    # ----------------------------------------------------------------- outputs
    baselines: str = Field(
        "avg,m-avg", description="averaging baselines to compute beside CRM: avg (mean of "
        "per-copy SART), m-avg (Fourier-weighted by each copy's wedge), comma-separated, or none"
    )
    m_avg_eps: float = Field(
        1e-2, gt=0, description="M-AVG regulariser ε of Σ W_i F(h_i) / (Σ W_i + ε)"
    )
    half_maps: bool = Field(
        True, description="also solve two half sets of copies separately and report their "
        "FSC (crm on real data)"
    )
    half_split: Literal["random", "alternate"] = Field(
        "random", description="half sets: a random split (from --seed) or alternate copies"
    )
    # ----------------------------------------------------------------- resources
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    chunk_copies: int | None = Field(
        None, ge=1, description="copies per batched block product (default: as many as keep "
        "a block under 2^24 voxels)"
    )
    plan_cache_gb: float | None = Field(
        None, gt=0, description="memory for CRM-SART's per-copy view matrices kept between "
        "iterations, GB (default: 4 GiB on the host, 40 % of a GPU); the copies beyond it are "
        "rebuilt at every visit, which costs several sweeps each (docs/crm.md)"
    )
    seed: int = Field(0, description="random seed (view order, half split)")

    @field_validator("baselines", mode="before")
    @classmethod
    def _baseline_list(cls, value: Any) -> str:
        return _names(value, BASELINE_NAMES, "baseline")

    @field_validator("interpolation_order")
    @classmethod
    def _spline_order(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError(f"interpolation_order must be 1 (bilinear) or 3 (cubic), got {value}.")
        return value

    @model_validator(mode="after")
    def _one_support(self) -> CrmConfig:
        given = [name for name, v in (("--support-radius", self.support_radius_px),
                                      ("--support-radius-angstrom", self.support_radius_angstrom),
                                      ("--mask", self.support_mask)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one support: {' and '.join(given)} were both given.")
        return self

    @property
    def baseline_names(self) -> tuple[str, ...]:
        """The baselines to compute, e.g. ``("avg", "m-avg")``; empty for none."""
        return tuple(n for n in self.baselines.split(",") if n)

    def resolve_solver(self, noisy: bool) -> CrmConfig:
        """This config with ``solver="auto"`` replaced by :data:`AUTO_SOLVER` ``[noisy]``.

        The rule (docs/crm.md, "Which solver"): CRM-SART, the paper's solver, is a row-action
        method that hands the shared particle from copy to copy with a fixed λ, so on
        inconsistent (noisy) data the particle follows the last copies' noise; CRM-SIRT
        updates it with all copies' residuals at once and so averages their noise. Measured
        (docs/results.md, issue 11): without noise CRM-SART was ahead in every 2D cell; with
        noise CRM-SIRT was ahead of CRM-SART in every cell (2D noise on the projections or in
        the images, 3D at SNR 1). Measured data are always noisy.
        """
        if self.solver != "auto":
            return self
        return self.updated(solver=AUTO_SOLVER[bool(noisy)])  # type: ignore[return-value]

    def solver_settings(self) -> tuple[int, float]:
        """``(n_iter, relaxation)`` with the solver's defaults filled in (``"auto"`` must be
        resolved first: :meth:`resolve_solver`)."""
        if self.solver == "auto":
            raise ValueError(
                "solver 'auto' depends on the data (noisy: sirt, noise-free: sart); call "
                "resolve_solver(noisy) or give --solver."
            )
        n_iter, relaxation = SOLVER_DEFAULTS[self.solver]
        return (self.n_iter or n_iter,
                self.relaxation if self.relaxation is not None else relaxation)

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the chosen :data:`cryowedge.crm.CRM_SOLVERS` function."""
        n_iter, relaxation = self.solver_settings()
        kwargs: dict[str, Any] = {"n_iter": n_iter, "relaxation": relaxation,
                                  "positivity": self.positivity}
        if self.solver == "sart":
            kwargs.update(order=self.order, seed=self.seed, particle=self.particle)
            if self.plan_cache_gb is not None:
                kwargs["plan_cache_bytes"] = int(self.plan_cache_gb * 2**30)
        elif self.solver == "kaczmarz":
            kwargs.update(order=self.order, seed=self.seed)
        elif self.solver == "tv":
            kwargs.update(lam=self.tv_lambda)
        return kwargs

    def support_radius_voxels(self, pixel_size_angstrom: float) -> float | None:
        """The sphere radius in voxels (from Å if given that way), or None."""
        if self.support_radius_angstrom is not None:
            return self.support_radius_angstrom / float(pixel_size_angstrom)
        return self.support_radius_px


class CrmSimulateConfig(BaseConfig):
    """A simulated CRM data set (``cryowedge crm simulate KIND``).

    Fields left ``None`` take the data set's default from :data:`SIMULATE_DEFAULTS` (the
    paper's settings): :meth:`resolved` fills them in.
    """

    kind: Literal["shepp-logan", "ribosome", "3d", "tomogram"] = Field(
        "shepp-logan", description="data set: the paper's 2D Shepp-Logan (blocks around it) or "
        "ribosome slice (noise around it), 3D copies of a protein in crowded-cell boxes, or a "
        "particle tomogram with a STAR list (real-use input)"
    )
    copies: int | None = Field(
        None, ge=1, description="number of copies N (default: 2D 3, 3d 20, tomogram 6)"
    )
    size: int | None = Field(
        None, ge=8, description="image side (2D: shepp-logan 320, ribosome 200) or particle "
        "box edge (3d 48, tomogram 32), pixels"
    )
    support_radius_px: float | None = Field(
        None, gt=0, description="support radius, pixels (default: the simulator's: "
        "shepp-logan 0.3 x size, ribosome 0.325 x size, 3D the particle's extent + 1.5)",
        json_schema_extra=cli("--support-radius"),
    )
    snr: float | None = Field(
        None, gt=0, description="Gaussian noise SNR (signal var / noise var) of each copy's "
        "projections (default: none in 2D and tomogram, 1 in 3d)"
    )
    clean: bool = Field(False, description="no noise at all (overrides the 3d default SNR)")
    tilt_range_deg: float | None = Field(
        None, gt=0, le=90, description="tilts from -R to +R degrees (default: 50; tomogram 60)",
        json_schema_extra=cli("--tilt-range"),
    )
    tilt_step_deg: float | None = Field(
        None, gt=0, description="tilt step, degrees (default: 2D 3, 3d 5, tomogram 3)",
        json_schema_extra=cli("--tilt-step"),
    )
    pixel_size_angstrom: float | None = Field(
        None, gt=0, description="pixel size, Å (default: 2D 1, 3D 3)",
        json_schema_extra=cli("--pixel-size"),
    )
    background: str | None = Field(
        None, description="surroundings of each copy: 2D blocks | noise | discs | authors | "
        "none (default shepp-logan blocks, ribosome noise; authors = the authors' weak ribosome "
        "stain, noise of the slice's mean and std smoothed by 0.8 px); 3D cell | none "
        "(default cell)"
    )
    orientations: Literal["sector", "even"] = Field(
        "sector", description="2D copy angles: one uniform draw per 360/N sector, or evenly "
        "spaced with one random offset (the authors')"
    )
    background_frame: Literal["copy", "particle"] = Field(
        "copy", description="2D: each stain fills the copy's own box, projected at the "
        "microscope angles (as real data), or is drawn in the particle frame and projected "
        "with the particle at the rotated angles (the authors')"
    )
    noise_domain: Literal["projection", "image"] = Field(
        "projection", description="2D: --snr noise on each copy's projections (the paper's "
        "text) or on its stained image before projection (the authors' code; needs "
        "--background-frame particle)"
    )
    rotation: Literal["exact", "linear"] = Field(
        "exact", description="apply each copy's rotation exactly (2D: rotated tilt range; 3D: "
        "re-rendered atoms) or with the solver's trilinear operator (data in its range)"
    )
    tomogram_shape: tuple[int, int, int] | None = Field(
        None, description="tomogram Z Y X, voxels (kind tomogram; default 48 96 96)"
    )
    density: str | None = Field(
        None, description="map (MRC) or model (PDB/mmCIF) of the particle (default: ribosome "
        "../shared/data/aspire_70S_ribosome_65.mrc; 3D the bundled 1A5T atoms)"
    )
    seed: int = Field(0, description="random seed (orientations, surroundings, noise)")

    @model_validator(mode="after")
    def _check_kind_options(self) -> CrmSimulateConfig:
        kind = self.kind
        two_d = kind in ("shepp-logan", "ribosome")
        if self.background is not None:
            allowed = ("blocks", "noise", "discs", "authors", "none") if two_d \
                else ("cell", "none")
            if self.background not in allowed:
                raise ValueError(f"background {self.background!r} does not apply to {kind}; "
                                 f"choose from {', '.join(allowed)}.")
        if self.tomogram_shape is not None and kind != "tomogram":
            raise ValueError(f"tomogram_shape applies to kind tomogram, not {kind}.")
        if self.density is not None and kind == "shepp-logan":
            raise ValueError("density does not apply to shepp-logan (the phantom is built in).")
        if self.snr is not None and self.clean:
            raise ValueError("give --snr or --clean, not both.")
        if not two_d:
            for name, default in (("orientations", "sector"), ("background_frame", "copy"),
                                  ("noise_domain", "projection")):
                if getattr(self, name) != default:
                    raise ValueError(f"{name} applies to the 2D data sets (shepp-logan, "
                                     f"ribosome), not {kind}.")
        if self.noise_domain == "image" and self.background_frame != "particle":
            raise ValueError("noise_domain image needs background_frame particle (the noise "
                             "goes into the stained image, which exists only in that frame).")
        return self

    def resolved(self) -> dict[str, Any]:
        """Every setting with the data set's defaults filled in (:data:`SIMULATE_DEFAULTS`)."""
        out = dict(SIMULATE_DEFAULTS[self.kind])
        out.setdefault("snr", None)
        out.setdefault("tomogram_shape", None)
        for key, value in self.model_dump().items():
            if value is not None or key not in out:
                out[key] = value
        if self.clean:
            out["snr"] = None
        return out


class DemoCrmConfig(BaseConfig):
    """The CRM panel of ``cryowedge demo``: a tiny 2D problem (a few seconds).

    ``copies`` copies of a ``size``² Shepp–Logan phantom, each stained with random blocks
    outside the support and measured over ±``tilt_range_deg`` from its own rotated start
    (the paper's 2D experiment, small); CRM-SART and AVG with the paper's 20 iterations at
    λ = 0.2; PSNR/SSIM/PCC inside the support after the affine calibration.
    """

    copies: int = Field(5, ge=2, description="number of copies")
    size: int = Field(64, ge=16, description="image side, pixels")
    tilt_range_deg: float = Field(50.0, gt=0, le=90, description="tilts ±R degrees")
    tilt_step_deg: float = Field(3.0, gt=0, description="tilt step, degrees")
    snr: float | None = Field(None, gt=0, description="projection SNR (none: clean)")
    seed: int = Field(0, description="random seed")

