"""Typed configuration models: the ONLY home of defaults, help texts and option names.

The CLI generates its options from these models (:mod:`cryowedge.cli._options`): the option
name is the field name with dashes (or the field's ``cli`` entry), the help is the field's
description, the default and the choices come from the field. Every run writes the
resolved model (plus version and command line) next to its outputs. ``extra="forbid"``
catches typos in YAML files.

Reconstruction options are one model per method (:class:`FbpConfig`, :class:`SirtConfig`,
...), subclasses of :class:`ReconstructConfig` that hold the shared fields; together they
form a discriminated union on ``method``, built from the method registry
(:mod:`cryowedge.config.registry`). ``ReconstructConfig(method="sirt", n_iter=5)`` builds the
method's model.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from cryowedge._filter_names import FILTER_NAMES, normalise_filter_name, normalise_wbp_filter_name
from cryowedge._validation import parse_view_list
from cryowedge.config.registry import get_method, methods, parse_method_config, register_method

__all__ = [
    "BaseConfig",
    "SimulateConfig",
    "ReconstructConfig",
    "IterativeConfig",
    "FbpConfig",
    "WbpConfig",
    "SirtConfig",
    "SartConfig",
    "ArtConfig",
    "CglsConfig",
    "TvConfig",
    "DemoConfig",
    "DemoDewedgeConfig",
    "StetSimulateConfig",
    "StetReconstructConfig",
    "StetConfig",
    "RENAMED_OPTIONS",
    "cli",
]

logger = logging.getLogger(__name__)

#: Options that were renamed, old name → new name, so old YAML files get a precise hint.
RENAMED_OPTIONS = {"lam": "tv_lambda"}


def cli(*flags: str, part: int | None = None, help: str | None = None) -> dict[str, Any]:
    """CLI metadata of a field, for ``Field(json_schema_extra=cli(...))``.

    ``flags`` replace the default ``--field-name`` (e.g. ``cli("--filter")``); ``part`` makes
    the field one value of a multi-value option shared with other fields (``--tilt-range MIN
    MAX``: part 0 and 1), whose help is the ``help`` of part 0.
    """
    meta: dict[str, Any] = {}
    if flags:
        meta["cli"] = list(flags)
    if part is not None:
        meta["cli_part"] = part
    if help is not None:
        meta["cli_help"] = help
    return meta


class BaseConfig(BaseModel):
    """Pydantic base with YAML round trip and no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def _unknown_option_hint(cls, key: str) -> str | None:
        """A hint for an unknown key (subclasses name the model that has it)."""
        return None

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        """Refuse unknown keys with a hint (the renamed name, or the closest valid one)."""
        if not isinstance(data, dict):
            return data
        fields = list(cls.model_fields)
        problems = []
        for key in (k for k in data if k not in cls.model_fields):
            new = RENAMED_OPTIONS.get(str(key))
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (
                f"renamed to '{new}'"
                if new in cls.model_fields
                else cls._unknown_option_hint(str(key))
                or (f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(fields)}")
            )
            problems.append(f"unknown option '{key}' ({hint})")
        if problems:
            raise ValueError("; ".join(problems))
        return data

    @classmethod
    def _read_yaml(cls, path: str | Path) -> dict[str, Any]:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}.")
        return data

    @classmethod
    def from_yaml(cls, path: str | Path) -> BaseConfig:
        """Load from a YAML file (unknown keys are an error)."""
        return cls(**cls._read_yaml(path))

    def to_yaml(self) -> str:
        """YAML text of the resolved configuration."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def updated(self, **changes: Any) -> BaseConfig:
        """Copy with the non-``None`` values of ``changes`` applied (and validated).

        Only the fields set explicitly on ``self`` are carried over (the rest keep their
        defaults), so validators see which options a user actually gave.
        """
        data = self.model_dump(exclude_unset=True)
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self)(**data)


# --------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------


class _PhantomTiltSeriesConfig(BaseConfig):
    """What every simulation shares: the phantom, the volume and the tilt scheme."""

    phantom: Literal["cell", "shepp-logan", "spheres"] = Field(
        "cell", description="crowded cell, 3D Shepp-Logan or hollow spheres"
    )
    shape: tuple[int, int, int] = Field((64, 128, 128), description="volume (z, y, x) in voxels")
    pixel_size_angstrom: float = Field(
        10.0,
        gt=0,
        description="voxel / detector pixel size, Å",
        json_schema_extra=cli("--pixel-size"),
    )
    tilt_min_deg: float = Field(
        -60.0,
        ge=-90,
        le=90,
        description="lowest tilt, degrees",
        json_schema_extra=cli("--tilt-range", part=0, help="min max tilt, degrees"),
    )
    tilt_max_deg: float = Field(
        60.0,
        ge=-90,
        le=90,
        description="highest tilt, degrees",
        json_schema_extra=cli("--tilt-range", part=1),
    )
    tilt_step_deg: float = Field(
        2.0, gt=0, description="tilt step, degrees", json_schema_extra=cli("--tilt-step")
    )
    n_particles: int = Field(12, ge=0, description="particles in the cell phantom")
    oversample: int = Field(2, ge=1, le=4, description="project a finer volume and bin")
    seed: int = Field(0, description="random seed")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")

    @model_validator(mode="after")
    def _check_tilts_and_shape(self) -> _PhantomTiltSeriesConfig:
        if self.tilt_min_deg >= self.tilt_max_deg:
            raise ValueError(
                f"tilt_min_deg ({self.tilt_min_deg}) must be below tilt_max_deg "
                f"({self.tilt_max_deg})."
            )
        if min(self.shape) < 4:
            raise ValueError(f"shape must be at least 4 voxels per axis, got {self.shape}.")
        return self


class SimulateConfig(_PhantomTiltSeriesConfig):
    """Phantom and tilt-series simulation (``cryowedge simulate``)."""

    snr: float | None = Field(0.5, gt=0, description="Gaussian noise SNR (signal var / noise var)")
    dose_e_per_angstrom2: float | None = Field(
        None,
        gt=0,
        description="Poisson noise at this dose per tilt (e/Å²), instead of snr",
        json_schema_extra=cli("--dose"),
    )
    defocus_angstrom: float | None = Field(
        None, description="apply a CTF with this defocus (Å)", json_schema_extra=cli("--defocus")
    )
    even_odd: bool = Field(True, description="also write half-dose even/odd series")

    @model_validator(mode="before")
    @classmethod
    def _dose_replaces_snr(cls, data: Any) -> Any:
        """A dose given without an snr replaces the default snr (Poisson instead of Gaussian)."""
        if (
            isinstance(data, dict)
            and data.get("dose_e_per_angstrom2") is not None
            and "snr" not in data
        ):
            data = {**data, "snr": None}
        return data

    @model_validator(mode="after")
    def _check_noise(self) -> SimulateConfig:
        if self.snr is not None and self.dose_e_per_angstrom2 is not None:
            raise ValueError("set either snr or dose_e_per_angstrom2 (set the other to null).")
        return self


# --------------------------------------------------------------------------------------
# Reconstruction: one model per method, registered with its runner
# --------------------------------------------------------------------------------------


class _ReconstructionCommon(BaseConfig):
    """Fields of every reconstruction command (``reconstruct`` and ``stet reconstruct``)."""

    method: str = Field(description="reconstruction method")
    thickness: int | None = Field(
        None, ge=1, description="output z size in voxels (default for files: estimated from "
        "the data, the z-extent of a coarse FBP's signal plus a margin, rounded up to 8; "
        "arrays in the Python API: the detector width)"
    )
    tilt_axis_angle_deg: float | None = Field(
        None,
        allow_inf_nan=False,
        description="in-plane tilt-axis angle on the raw images, degrees "
        "(default: from the .mdoc, else 0)",
        json_schema_extra=cli("--tilt-axis-angle"),
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    normalize: bool = Field(
        True,
        description="scale the data to unit std before solving (and the result "
        "back), so weights do not depend on the data's units (iterative methods)",
    )


class ReconstructConfig(_ReconstructionCommon):
    """Reconstruction options (``cryowedge reconstruct``): the fields every method shares.

    Each method has its own subclass (:class:`FbpConfig`, ..., :class:`TvConfig`), found
    through the method registry; calling ``ReconstructConfig(method=..., **options)`` (or
    :meth:`from_yaml`, :meth:`model_validate`) builds the registered model of ``method``
    (default ``"fbp"``), so this class is also the discriminated union's entry point.
    """

    method: str = Field("fbp", description="reconstruction method")
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        description="save the iterate every N iterations next "
        "to the output (resume with --resume; iterative methods)",
    )
    seed: int = Field(0, description="random seed (art/sart visiting order; inr initial "
                      "weights and batch order)")
    slab_rows: int | None = Field(
        None,
        gt=0,
        description="rows along the tilt axis (y) per streamed slab (default: automatic)",
        json_schema_extra=cli("--slab", "--slab-rows"),
    )
    exclude_views: str | None = Field(
        None,
        description="views to drop before any work: 1-based numbers in stack order and "
        "inclusive ranges, like IMOD's EXCLUDELIST (e.g. 1,2,40-41)",
        json_schema_extra=cli("--exclude"),
    )
    bin_factor: int = Field(
        1,
        ge=1,
        description="bin the input images N×N (block mean, pixel size ×N) before any work, "
        "after --exclude; --thickness then counts binned voxels",
        json_schema_extra=cli("--bin"),
    )
    even_odd: bool = Field(
        False,
        description="also write <output stem>_even.mrc and _odd.mrc, the same reconstruction "
        "of alternate views in acquisition order (from the .mdoc, else stack order), after "
        "--exclude/--bin; iterative halves run without checkpoints",
        json_schema_extra=cli("--even-odd"),
    )
    check_tilt_axis: bool = Field(
        True,
        description="when the tilt-axis angle is defaulted to 0 (no --tilt-axis-angle, no "
        ".mdoc, no --alignment), check it against held-out views first (a few seconds) and "
        "warn with the better angle when the data clearly disagree",
    )
    roi: tuple[int, int, int, int] | None = Field(
        None,
        description="reconstruct only this box of the full tomogram: X0 Y0 NX NY, its 0-based "
        "start column and row and its size in voxels of the aligned images after --bin (y is "
        "the tilt axis; like IMOD's WIDTH/SHIFT x and SLICE); only its rows are read and the "
        "MRC origin records where it sits",
        json_schema_extra=cli("--roi"),
    )
    z_offset: float = Field(
        0.0,
        allow_inf_nan=False,
        description="centre of the output along z, voxels above the tilt axis (+z, towards "
        "the electron source), like IMOD's SHIFT z",
    )
    x_axis_tilt_deg: float = Field(
        0.0,
        allow_inf_nan=False,
        description="tilt of the specimen about x, degrees, like IMOD's XAXISTILT (same sign, "
        "|value| <= 30): a thicker lab volume is reconstructed and resampled once so that the "
        "specimen lies flat; --xtilt adds an IMOD .xtilt file",
        json_schema_extra=cli("--x-axis-tilt"),
    )
    ctf_correction: Literal["none", "phase-flip", "wiener"] = Field(
        "none",
        description="CTF-correct each view before any work (also for --even-odd): phase-flip "
        "in strips parallel to the tilt axis like IMOD's ctfphaseflip, or wiener (phases "
        "flipped, amplitudes divided by |CTF| damped by --wiener-constant); needs "
        "--defocus-file or --defocus",
    )
    defocus_angstrom: float | None = Field(
        None,
        gt=0,
        description="defocus of every view at the tilt axis, Å (positive = underfocus), "
        "instead of --defocus-file",
        json_schema_extra=cli("--defocus"),
    )
    voltage_kv: float = Field(
        300.0, gt=0, description="acceleration voltage, kV (CTF and dose weighting)",
        json_schema_extra=cli("--voltage"),
    )
    spherical_aberration_mm: float = Field(
        2.7, ge=0, description="spherical aberration Cs, mm", json_schema_extra=cli("--cs")
    )
    amplitude_contrast: float = Field(0.07, ge=0, le=1, description="amplitude contrast fraction")
    defocus_tolerance_angstrom: float = Field(
        200.0,
        gt=0,
        description="largest defocus step between CTF strip centres, Å (pixels between two "
        "strips are interpolated)",
        json_schema_extra=cli("--defocus-tolerance"),
    )
    wiener_constant: float = Field(
        0.1, gt=0, description="ε of --ctf-correction wiener: CTF/(CTF²+ε) (an inverse SNR)"
    )
    dose_weighting: bool = Field(
        False,
        description="weight each view by its exposure filter (Grant & Grigorieff 2015) from "
        "the .mdoc ExposureDose in acquisition order, or --dose-per-tilt",
    )
    dose_per_tilt: float | None = Field(
        None,
        gt=0,
        description="exposure of each view, e/Å², for --dose-weighting (instead of the .mdoc)",
    )

    @model_validator(mode="after")
    def _ctf_and_dose_options(self) -> ReconstructConfig:
        """Options that would do nothing without the switch they belong to."""
        if self.defocus_angstrom is not None and self.ctf_correction == "none":
            raise ValueError("--defocus is given but --ctf-correction is none; add "
                             "--ctf-correction phase-flip (or wiener), or drop --defocus.")
        if self.dose_per_tilt is not None and not self.dose_weighting:
            raise ValueError("--dose-per-tilt is given without --dose-weighting; add "
                             "--dose-weighting, or drop --dose-per-tilt.")
        return self

    output_orientation: Literal["xy", "xz"] = Field(
        "xy",
        description="layout of the written tomogram: xy = XY sections, (z, y, x), as IMOD's "
        "trimvol -rx and 3dmod show it; xz = IMOD tilt's raw XZ sections (y, thickness, x)",
        json_schema_extra=cli("--orientation"),
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the reconstruction (default: PyTorch's, all cores)",
    )

    @field_validator("roi")
    @classmethod
    def _roi_form(cls, value: Any) -> Any:
        """Starts >= 0 and sizes >= 1 now (the detector bounds are checked against the stack)."""
        if value is not None and (min(value[:2]) < 0 or min(value[2:]) < 1):
            raise ValueError(
                f"--roi X0 Y0 NX NY = {' '.join(map(str, value))}: the start must be >= 0 and "
                "the sizes >= 1 (0-based voxels of the full tomogram)."
            )
        return value

    @field_validator("x_axis_tilt_deg")
    @classmethod
    def _x_axis_tilt_range(cls, value: float) -> float:
        if abs(value) > 30.0:
            raise ValueError(
                f"--x-axis-tilt {value:g} is beyond ±30 degrees; it is the specimen's small tilt "
                "about X (IMOD XAXISTILT), not a tilt angle."
            )
        return value

    @field_validator("exclude_views", mode="before")
    @classmethod
    def _exclusion_list(cls, value: Any) -> Any:
        """Check the list's form now (the views' existence is checked against the stack)."""
        if value is None:
            return None
        text = str(value).strip()
        parse_view_list(text)
        return text

    def __new__(cls, /, *args: Any, **data: Any) -> ReconstructConfig:
        # Calling the base builds the method's model. Python then runs that model's
        # __init__ on the same keywords again: a second, identical validation (cheap).
        if cls is ReconstructConfig and not args:
            return parse_method_config(data)
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> ReconstructConfig:  # type: ignore[override]
        if cls is ReconstructConfig and isinstance(obj, dict):
            return parse_method_config(obj)
        return super().model_validate(obj, **kwargs)

    @classmethod
    def _unknown_option_hint(cls, key: str) -> str | None:
        owners = [spec.name for spec in methods() if key in spec.config.model_fields]
        if owners:
            return (
                f"applies to method {', '.join(owners)}, not {cls.model_fields['method'].default}"
            )
        return None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReconstructConfig:
        """Load a method's options from YAML (``method:`` picks the model, default fbp).

        Files written by the flat model of earlier versions keep working: ``null`` for
        ``n_iter``/``relaxation`` means the method's default, and options of other methods are
        dropped when they hold their default (any other value is an error naming the method
        they belong to).
        """
        data = cls._read_yaml(path)
        if cls is not ReconstructConfig:
            data.setdefault("method", cls.model_fields["method"].default)
        model = get_method(data.get("method", "fbp")).config
        for key in ("n_iter", "relaxation"):
            if key in data and data[key] is None:
                del data[key]
        dropped = []
        for key in [k for k in data if k not in model.model_fields]:
            others = [
                spec.config.model_fields[key]
                for spec in methods()
                if key in spec.config.model_fields
            ]
            if others and all(data[key] is None or data[key] == f.default for f in others):
                dropped.append(key)
                del data[key]
        if dropped:
            logger.info(
                "%s: ignoring options of other methods at their defaults: %s",
                path,
                ", ".join(dropped),
            )
        return model(**data)

    def updated(self, **changes: Any) -> ReconstructConfig:
        """Copy with the non-``None`` ``changes``; a new ``method`` keeps only the shared fields."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("method", self.method) == self.method:
            return super().updated(**changes)
        shared = {
            k: v
            for k, v in self.model_dump(exclude_unset=True).items()
            if k in ReconstructConfig.model_fields and k != "method"
        }
        return parse_method_config({**shared, **changes})


class _FilteredConfig(ReconstructConfig):
    """Filter options of the direct methods (FBP, WBP)."""

    filter_name: str = Field(
        "ram-lak",
        description=" | ".join(FILTER_NAMES)
        + " (wbp: no sirt; imod = ram-lak with IMOD's radial filter 0.35/0.035 cycles/px)",
        json_schema_extra=cli("--filter"),
    )
    cutoff: float = Field(1.0, gt=0, le=1, description="window cutoff, fraction of Nyquist")
    radial_cutoff: float | None = Field(
        None, gt=0, le=0.5, description="IMOD-style radial low-pass cutoff, cycles/px"
    )
    radial_falloff: float = Field(0.035, gt=0, description="radial Gaussian fall-off, cycles/px")
    padding: Literal["edge", "zero"] = Field(
        "edge", description="detector padding before filtering"
    )

    @field_validator("filter_name")
    @classmethod
    def _filter(cls, value: str) -> str:
        return normalise_filter_name(value)


@register_method(
    runner="cryowedge.workflows.methods:run_fbp",
    summary="filtered back-projection",
    work_arrays=(4, 8),  # the padded rfft of the filtered series dominates the series side
    demo={
        "fbp_ramlak": {"filter_name": "ram-lak"},
        "fbp_hann": {"filter_name": "hann"},
        "fbp_sirt_like": {"filter_name": "sirt", "sirt_iterations": 30},
    },
)
class FbpConfig(_FilteredConfig):
    """Filtered back-projection (``--method fbp``)."""

    method: Literal["fbp"] = "fbp"
    sirt_iterations: int = Field(10, ge=1, description="iterations mimicked by --filter sirt")


@register_method(
    runner="cryowedge.workflows.methods:run_wbp",
    summary="weighted back-projection (exact weighting)",
    work_arrays=(4, 8),
    demo={"wbp": {"filter_name": "hann"}},
)
class WbpConfig(_FilteredConfig):
    """Weighted back-projection (``--method wbp``); no ``sirt`` filter (it modifies the FBP
    ramp, which WBP replaces)."""

    method: Literal["wbp"] = "wbp"

    @field_validator("filter_name")
    @classmethod
    def _filter(cls, value: str) -> str:
        return normalise_wbp_filter_name(value)


def _n_iter(default: int) -> Any:
    return Field(default, description="iterations (sweeps for art/sart, outer iterations for tv)")


def _relaxation(default: float) -> Any:
    return Field(default, description="relaxation in (0, 2) (ADMM over-relaxation for tv)")


class IterativeConfig(ReconstructConfig):
    """Options of every iterative method (solvers of :mod:`cryowedge.solvers`).

    On noisy data SIRT/SART/CGLS semi-converge (later iterations fit noise), so the default
    iteration counts are modest; see docs/results.md for the measured trade-off.
    """

    n_iter: int = _n_iter(20)
    positivity: bool = Field(False, description="constrain the tomogram to be >= 0 (not for cgls)")
    tol: float | None = Field(
        None, gt=0, description="stop when the relative change of the tomogram falls below this"
    )

    @field_validator("n_iter")
    @classmethod
    def _positive_n_iter(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"n_iter must be a positive integer, got {value}.")
        return value

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the method's solver (``cryowedge.solvers.SOLVERS[method]``)."""
        kwargs = {"n_iter": self.n_iter, "positivity": self.positivity, "tol": self.tol}
        if "relaxation" in type(self).model_fields:
            kwargs["relaxation"] = self.relaxation  # type: ignore[attr-defined]
        return kwargs


class _RelaxedConfig(IterativeConfig):
    relaxation: float = _relaxation(1.0)

    @field_validator("relaxation")
    @classmethod
    def _relaxation_range(cls, value: float) -> float:
        if not 0.0 < value < 2.0:
            raise ValueError(f"relaxation must lie in (0, 2), got {value}.")
        return value


class _RowActionConfig(_RelaxedConfig):
    order: Literal["random", "sequential"] = Field(
        "random", description="tilt / row visiting order"
    )

    def solver_kwargs(self) -> dict[str, Any]:
        return {**super().solver_kwargs(), "order": self.order, "seed": self.seed}


@register_method(
    runner="cryowedge.workflows.methods:run_iterative",
    solver="cryowedge.solvers:sirt",
    summary="simultaneous iterative reconstruction",
    work_arrays=(10, 7),  # measured: 256³ and 512³ peak RSS within 3 % of this estimate
    demo={"sirt": {"n_iter": 10, "positivity": True}},
)
class SirtConfig(_RelaxedConfig):
    """SIRT (``--method sirt``)."""

    method: Literal["sirt"] = "sirt"


@register_method(
    runner="cryowedge.workflows.methods:run_iterative",
    solver="cryowedge.solvers:sart",
    summary="simultaneous algebraic reconstruction (one tilt per update)",
    work_arrays=(8, 7),
)
class SartConfig(_RowActionConfig):
    """SART (``--method sart``); relaxation 0.2 is the CRM paper's."""

    method: Literal["sart"] = "sart"
    n_iter: int = _n_iter(10)
    relaxation: float = _relaxation(0.2)


@register_method(
    runner="cryowedge.workflows.methods:run_iterative",
    solver="cryowedge.solvers:art",
    summary="ART / Kaczmarz row action",
    work_arrays=(7, 6),
)
class ArtConfig(_RowActionConfig):
    """ART (``--method art``); relaxation 0.5 damps noise in row action."""

    method: Literal["art"] = "art"
    n_iter: int = _n_iter(3)
    relaxation: float = _relaxation(0.5)


@register_method(
    runner="cryowedge.workflows.methods:run_iterative",
    solver="cryowedge.solvers:cgls",
    summary="conjugate gradient least squares",
    slab_mode="independent",  # CG step lengths are inner products over the whole volume
    work_arrays=(9, 7),
)
class CglsConfig(IterativeConfig):
    """CGLS (``--method cgls``): it chooses its own step lengths (no relaxation)."""

    method: Literal["cgls"] = "cgls"
    n_iter: int = _n_iter(10)

    @field_validator("positivity")
    @classmethod
    def _no_positivity(cls, value: bool) -> bool:
        if value:
            raise ValueError("cgls cannot enforce positivity; use --method sirt, sart or tv.")
        return value


@register_method(
    runner="cryowedge.workflows.methods:run_iterative",
    solver="cryowedge.solvers:tv_admm",
    summary="TV-regularised least squares by ADMM + CG",
    slab_mode="halo",  # the gradient couples neighbouring rows
    # measured at 256³ (x, rhs, CG vectors, gradient splits, duals, temporaries)
    work_arrays=(23, 6),
    demo={"tv_admm": {"n_iter": 15, "cg_iter": 5, "positivity": True}},
)
class TvConfig(_RelaxedConfig):
    """TV-ADMM (``--method tv``)."""

    method: Literal["tv"] = "tv"
    n_iter: int = _n_iter(30)
    tv_lambda: float = Field(
        5.0,
        ge=0,
        description="TV weight λ on the data normalised to unit std "
        "(about noise variance / prior scale: lower it for cleaner data)",
    )
    regularizer: Literal["tv", "tv-aniso", "l1"] = Field("tv", description="regulariser")
    rho: float | None = Field(
        None, gt=0, description="initial ADMM penalty (default 10 x tv_lambda)"
    )
    cg_iter: int = Field(10, ge=1, description="inner CG iterations per ADMM step")
    halo_rows: int = Field(
        8,
        gt=0,
        description="rows of overlap on each side of a streamed slab (TV couples "
        "neighbouring rows)",
        json_schema_extra=cli("--halo", "--halo-rows"),
    )

    def solver_kwargs(self) -> dict[str, Any]:
        return {
            **super().solver_kwargs(),
            "lam": self.tv_lambda,
            "regularizer": self.regularizer,
            "rho": self.rho,
            "cg_iter": self.cg_iter,
        }


def _demo_methods() -> dict[str, ReconstructConfig]:
    return {
        name: spec.config(**changes) for spec in methods() for name, changes in spec.demo.items()
    }


class DemoDewedgeConfig(BaseConfig):
    """The demo's dewedge panel: a tiny DeepDeWedge fit, in memory (docs/dewedge.md, "Demo").

    The views are split even/odd by stack index, each half is reconstructed by FBP with
    ``filter_name``, a small U-Net is fitted on sub-tomogram pairs of the halves
    (:func:`cryowedge.dewedge.fit.fit`, checkpoints under ``<out>/dewedge_fit/``), and the
    FBP of the full series (same filter) is refined with it in tiles of ``refine_tile``
    voxels (the paper's step 3). Defaults: about 10–20 s on 2 CPU cores.
    """

    filter_name: str = Field("hann", description="FBP filter of the halves and of the full "
                             "tomogram that is refined")
    subtomo_size: int = Field(16, ge=8, description="sub-tomogram edge for fitting, voxels "
                              "(divisible by 2^depth)")
    chans: int = Field(8, ge=1, description="U-Net channels at the first level")
    depth: int = Field(2, ge=1, le=4, description="U-Net down-sampling levels")
    epochs: int = Field(20, ge=1, description="fitting epochs")
    subtomos_per_epoch: int = Field(64, ge=1, description="sub-tomogram pairs per epoch")
    batch_size: int = Field(8, ge=1, description="sub-tomograms per optimiser step")
    lr: float = Field(4e-3, gt=0, description="Adam learning rate (10× the full-size default: "
                      "few steps)")
    refine_tile: int = Field(32, ge=8, description="tile edge of the refinement, voxels "
                             "(divisible by 2^depth)")
    seed: int = Field(0, description="random seed of the fit")

    @model_validator(mode="after")
    def _sizes_fit_depth(self) -> DemoDewedgeConfig:
        step = 2**self.depth
        for name in ("subtomo_size", "refine_tile"):
            value = getattr(self, name)
            if value % step:
                raise ValueError(f"dewedge.{name} {value} is not divisible by 2^depth = {step}; "
                                 f"use {max(step, value - value % step)}.")
        return self


class DemoConfig(BaseConfig):
    """The no-argument demo: a small crowded cell, a ±60° noisy series, the registered
    methods' demo presets (FBP, WBP, SIRT, TV-ADMM) and a small dewedge panel."""

    simulate: SimulateConfig = SimulateConfig(shape=(64, 128, 128), n_particles=16, snr=1.0)
    methods: dict[str, SerializeAsAny[ReconstructConfig]] = Field(
        default_factory=_demo_methods,
        description="output name → reconstruction options (with method)",
    )
    dewedge: DemoDewedgeConfig | None = Field(
        default_factory=DemoDewedgeConfig,
        description="the dewedge panel (a tiny self-supervised fit); null: no panel",
    )
    crm: DemoCrmConfig | None = Field(
        default_factory=lambda: DemoCrmConfig(),
        description="the CRM panel (CRM vs AVG on a tiny 2D problem, seconds); null: no panel",
    )
    inr: DemoInrConfig | None = Field(
        default_factory=lambda: DemoInrConfig(),
        description="the INR panel (a small coordinate network on the central rows, seconds); "
        "null: no panel",
    )

    @field_validator("methods", mode="before")
    @classmethod
    def _method_models(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(
                f"methods must map output names to options, got {type(value).__name__}."
            )
        return {name: parse_method_config(v) for name, v in value.items()}


# --------------------------------------------------------------------------------------
# Compressed-sensing STEM tomography (random-beam STET, thesis ch. 3): cryowedge stet ...
# --------------------------------------------------------------------------------------


class StetSimulateConfig(_PhantomTiltSeriesConfig):
    """Random-beam STET simulation (``cryowedge stet simulate``).

    The full-dose series is projected from the phantom (oversampled, so the data are not
    generated by the reconstruction operator), Gaussian noise is added at ``snr``, and a
    random scan mask keeps ``dose_fraction`` of the pixels of every tilt (the same dose
    per scanned pixel as at full dose; unmeasured pixels are stored as 0).
    """

    tilt_min_deg: float = Field(
        -70.0,
        ge=-90,
        le=90,
        description="lowest tilt, degrees",
        json_schema_extra=cli("--tilt-range", part=0, help="min max tilt, degrees"),
    )
    tilt_max_deg: float = Field(
        70.0,
        ge=-90,
        le=90,
        description="highest tilt, degrees",
        json_schema_extra=cli("--tilt-range", part=1),
    )
    tilt_step_deg: float = Field(
        1.0, gt=0, description="tilt step, degrees", json_schema_extra=cli("--tilt-step")
    )
    seed: int = Field(0, description="seed of the phantom, the noise and the scan mask")
    dose_fraction: float = Field(
        0.3, gt=0, le=1, description="fraction of the pixels scanned per tilt, (0, 1]"
    )
    snr: float = Field(
        10.0,
        gt=0,
        description="Gaussian noise SNR per pixel (signal var / noise var); "
        "10 suits STEM of stained sections",
    )


class StetReconstructConfig(_ReconstructionCommon):
    """Reconstruction from randomly undersampled STET data (``cryowedge stet reconstruct``).

    ``method="tv"`` solves thesis eq. 3.6, ``min ½‖S H x − b‖² + λ‖∇x‖₁`` (anisotropic TV by
    default) directly on the undersampled data; ``"inpaint-tv"`` is the two-step baseline of
    Saghi et al.: 2-D TV inpainting of every projection (weight ``inpaint_mu``), then TV
    reconstruction from the inpainted projections. With ``normalize`` the data are divided
    by the standard deviation of the measured pixels first (and the result multiplied
    back), so ``tv_lambda`` and ``inpaint_mu`` do not depend on the data's units (the
    convention of :class:`TvConfig`).
    """

    method: Literal["tv", "inpaint-tv"] = Field(
        "tv", description="tv: CS-TV on the undersampled data; inpaint-tv: 2-D inpainting, then TV"
    )
    tv_lambda: float = Field(
        1.0, ge=0, description="TV weight λ on the data normalised to unit std (as in reconstruct)"
    )
    regularizer: Literal["tv", "tv-aniso", "l1"] = Field("tv-aniso", description="regulariser")
    positivity: bool = Field(True, description="constrain the tomogram to be >= 0")
    n_iter: int = Field(40, ge=1, description="outer ADMM iterations of the reconstruction")
    cg_iter: int = Field(6, ge=1, description="inner CG iterations per ADMM step")
    rho: float | None = Field(
        None, gt=0, description="initial ADMM penalty (default 10 x tv_lambda)"
    )
    inpaint_mu: float = Field(
        0.1, ge=0, description="2-D TV weight μ of the inpainting step (inpaint-tv)"
    )
    inpaint_iter: int = Field(
        30, ge=1, description="ADMM iterations of the inpainting step (inpaint-tv)"
    )


class StetConfig(BaseConfig):
    """Both STET steps in one file: ``simulate:`` and ``reconstruct:`` sections."""

    simulate: StetSimulateConfig = Field(default_factory=StetSimulateConfig)
    reconstruct: StetReconstructConfig = Field(default_factory=StetReconstructConfig)

    @classmethod
    def section_from_yaml(
        cls, path: str | Path, section: Literal["simulate", "reconstruct"]
    ) -> BaseConfig:
        """One section from a YAML file that holds either a whole ``StetConfig`` (keys
        ``simulate``/``reconstruct``) or just that section's fields."""
        data = cls._read_yaml(path)
        if data and set(data) <= {"simulate", "reconstruct"}:
            return getattr(cls(**data), section)
        model = StetSimulateConfig if section == "simulate" else StetReconstructConfig
        return model(**data)


# The coordinate-network method registers itself from its own module (issue 12).
import cryowedge.config.inr  # noqa: E402,F401

# The demo's CRM panel settings live with the CRM configuration (issue 11), the INR
# panel's with the INR configuration (issue 12).
from cryowedge.config.crm import DemoCrmConfig  # noqa: E402
from cryowedge.config.inr import DemoInrConfig  # noqa: E402

DemoConfig.model_rebuild()
