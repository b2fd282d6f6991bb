"""CTF correction and dose weighting of the input views of ``cryowedge reconstruct``.

:meth:`CtfDosePlan.from_config` reads and checks everything (the defocus file against the
stack's views, the exposures from the ``.mdoc`` or ``--dose-per-tilt``) before any work;
:meth:`CtfDosePlan.read` then reads the kept views one at a time, corrects each at full
resolution on the raw detector (:func:`cryowedge.recon.ctf_correction.ctf_correct`, then
:func:`~cryowedge.recon.ctf_correction.dose_weight`), bins it, and returns the corrected
stack in memory (float32, ``n_kept × y/bin × x/bin``, as ``--bin`` does). Everything after it
(the thickness estimate, the reconstruction, streamed or not, and the ``--even-odd`` halves)
reads that corrected stack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.defocus import (
    DefocusTable,
    ViewDoses,
    constant_defocus,
    find_mdoc,
    read_defocus_file,
    view_doses,
)
from cryowedge.io.views import bin_images

__all__ = ["CtfDosePlan"]

logger = logging.getLogger(__name__)

#: Tilt angles of an IMOD .defocus file further than this (degrees) from the stack's: warn.
_ANGLE_WARN_DEG = 2.0


@dataclass(frozen=True, eq=False)
class CtfDosePlan:
    """What to do to each view before reconstruction, checked against the whole stack.

    Attributes
    ----------
    config
        The reconstruction options (``ctf_correction``, microscope, dose weighting).
    geometry
        Geometry of the whole raw stack (after ``--alignment``, before ``--exclude``/``--bin``):
        the strips follow its tilt-axis angle, shifts and per-view matrices.
    defocus
        Per-view defocus of the whole stack, or None without CTF correction.
    doses
        Per-view exposures of the whole stack, or None without dose weighting.
    record
        What was applied, for the run record.
    """

    config: ReconstructConfig
    geometry: TiltGeometry
    defocus: DefocusTable | None
    doses: ViewDoses | None
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        config: ReconstructConfig,
        geometry: TiltGeometry,
        *,
        stack_path: str | Path,
        angles_path: str | Path | None = None,
        defocus_path: str | Path | None = None,
    ) -> CtfDosePlan | None:
        """The plan for ``config`` on a stack with ``geometry``, or None when nothing is asked.

        Raises
        ------
        ValueError
            CTF correction without a defocus (or with both a file and ``--defocus``), a
            defocus file without CTF correction, a defocus file that does not match the
            stack's views, dose weighting without exposures.
        """
        mode = config.ctf_correction
        if defocus_path is not None and mode == "none":
            raise ValueError("--defocus-file is given but --ctf-correction is none; add "
                             "--ctf-correction phase-flip (or wiener), or drop --defocus-file.")
        if mode == "none" and not config.dose_weighting:
            return None
        n = geometry.n_tilts
        record: dict[str, Any] = {}
        defocus = None
        if mode != "none":
            if defocus_path is not None and config.defocus_angstrom is not None:
                raise ValueError("give either --defocus-file or --defocus, not both.")
            if defocus_path is None and config.defocus_angstrom is None:
                raise ValueError(
                    f"--ctf-correction {mode} needs the defocus of the views: --defocus-file FILE "
                    "(IMOD .defocus, CTFFIND4 output or AreTomo _CTF.txt) or --defocus Å."
                )
            defocus = (read_defocus_file(defocus_path, n) if defocus_path is not None
                       else constant_defocus(float(config.defocus_angstrom), n))  # type: ignore[arg-type]
            _warn_on_other_angles(defocus, geometry)
            if geometry.pixel_size_angstrom == 1.0:
                logger.warning("CTF correction with a pixel size of 1 Å: if the stack's header "
                               "has none, give --pixel-size")
            record["ctf"] = {
                "mode": mode, **defocus.summary(),
                "defocus_tolerance_angstrom": config.defocus_tolerance_angstrom,
                "voltage_kv": config.voltage_kv,
                "spherical_aberration_mm": config.spherical_aberration_mm,
                "amplitude_contrast": config.amplitude_contrast,
                "contrast": "kept (as IMOD ctfphaseflip)",
            }
            if mode == "wiener":
                record["ctf"]["wiener_constant"] = config.wiener_constant
        doses = None
        if config.dose_weighting:
            mdoc = find_mdoc(stack_path, angles_path)
            doses = view_doses(n, mdoc_path=mdoc, dose_per_tilt=config.dose_per_tilt)
            total = doses.prior_e_per_angstrom2 + doses.own_e_per_angstrom2
            record["dose"] = {
                "source": doses.source, "mdoc": None if mdoc is None else str(mdoc),
                "acquisition_order": doses.order,
                "total_exposure_e_per_angstrom2": round(float(total.max()), 2),
                "voltage_kv": config.voltage_kv,
            }
        return cls(config, geometry, defocus, doses, record)

    def correct(self, views: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Correct ``(k, ny, nx)`` raw views, which are views ``indices`` of the stack → float32."""
        from cryowedge.recon.ctf_correction import ctf_correct, dose_weight

        cfg = self.config
        out = np.asarray(views, dtype=np.float32)
        if self.defocus is not None:
            d = self.defocus.subset(indices)
            out = ctf_correct(
                out, self.geometry[indices], d.defocus_u_angstrom, d.defocus_v_angstrom,
                d.astigmatism_angle_deg, d.phase_shift_deg, mode=cfg.ctf_correction,
                voltage_kv=cfg.voltage_kv, spherical_aberration_mm=cfg.spherical_aberration_mm,
                amplitude_contrast=cfg.amplitude_contrast,
                defocus_tolerance_angstrom=cfg.defocus_tolerance_angstrom,
                wiener_constant=cfg.wiener_constant,
            )
        if self.doses is not None:
            d = self.doses.subset(indices)
            out = dose_weight(out, self.geometry.pixel_size_angstrom, d.prior_e_per_angstrom2,
                              d.own_e_per_angstrom2, cfg.voltage_kv)
        return out

    def read(self, data: Any, keep: np.ndarray | None, bin_factor: int) -> np.ndarray:
        """Views ``keep`` (all when None) of ``(n_tilts, y, x)`` ``data``, read one at a time,
        corrected at full resolution and binned → float32 ``(n_kept, y // bin, x // bin)``."""
        indices = np.arange(data.shape[0]) if keep is None else np.asarray(keep)
        ny, nx = (int(s) for s in data.shape[1:])
        out = np.empty((indices.size, ny // bin_factor, nx // bin_factor), dtype=np.float32)
        for i, t in enumerate(indices):
            view = np.asarray(data[int(t)], dtype=np.float32)[None]
            out[i] = bin_images(self.correct(view, np.array([t]))[0], bin_factor)
        logger.info("%s applied to %d views", " and ".join(self.record), indices.size)
        return out


def _warn_on_other_angles(defocus: DefocusTable, geometry: TiltGeometry) -> None:
    """Warn when an IMOD file's tilt angles are far from the stack's (another stack's file?)."""
    if defocus.tilt_angles_deg is None:
        return
    worst = float(np.max(np.abs(defocus.tilt_angles_deg - geometry.tilt_angles_deg)))
    if worst > _ANGLE_WARN_DEG:
        logger.warning("%s: its tilt angles differ from the stack's by up to %.1f°; check that it "
                       "belongs to this stack (views are matched by number)",
                       defocus.path.name if defocus.path else "defocus file", worst)
