"""Simulation: phantoms, particle maps from PDB, CTF, noise and tilt series."""

from cryowedge.simulate.ctf import apply_ctf, ctf_2d, defocus_at, defocus_of_point, phase_flip
from cryowedge.simulate.noise import add_gaussian_noise, add_poisson_noise
from cryowedge.simulate.pdb import gaussian_atom_map, load_example_particle, read_pdb_atoms
from cryowedge.simulate.phantoms import (
    CellPhantom,
    crowded_cell,
    gaussian_blob_particle,
    hollow_spheres,
    shepp_logan_2d,
    shepp_logan_3d,
)
from cryowedge.simulate.scan_mask import random_scan_mask, uniform_tilt_subset
from cryowedge.simulate.stet import StetSimulation, add_filaments, simulate_stet, stet_phantom
from cryowedge.simulate.tilt_series import SimulatedTiltSeries, project_volume, simulate_tilt_series

__all__ = [
    "add_filaments",
    "add_gaussian_noise",
    "add_poisson_noise",
    "apply_ctf",
    "CellPhantom",
    "crowded_cell",
    "ctf_2d",
    "defocus_at",
    "defocus_of_point",
    "gaussian_atom_map",
    "gaussian_blob_particle",
    "hollow_spheres",
    "load_example_particle",
    "phase_flip",
    "project_volume",
    "random_scan_mask",
    "read_pdb_atoms",
    "shepp_logan_2d",
    "shepp_logan_3d",
    "simulate_stet",
    "simulate_tilt_series",
    "SimulatedTiltSeries",
    "stet_phantom",
    "StetSimulation",
    "uniform_tilt_subset",
]
