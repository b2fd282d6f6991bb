"""STET diagnostic: T-DS vs I-DS at 20 % and 10 % on thin structures and high frequencies.

Run:  OMP_NUM_THREADS=2 python benchmarks/stet_thin_check.py   (about 1 min)
Same phantom, noise and solver as results_stet.py, λ = 1 (the best of its grid for both).
Prints the SNR over the filament voxels and the SNR of the part of the spectrum above
0.15 cycles/px, where angular undersampling aliases.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_stet import (  # noqa: E402
    SHAPE,
    SNR,
    SOLVER,
    SimulateConfig,
    TiltGeometry,
    add_filaments,
    make_phantom,
    random_scan_mask,
    reconstruct_stet,
    reconstruct_tds,
    simulate_stet,
    uniform_tilt_subset,
)
cell = make_phantom(SimulateConfig(shape=SHAPE, pixel_size_angstrom=10.0, n_particles=8, seed=0))
truth = add_filaments(cell, 10, seed=0)
thin = (truth - cell) > 0.1   # filament voxels
geom = TiltGeometry.from_range(-70, 70, 1, SHAPE[1:], pixel_size_angstrom=10.0)
sim = simulate_stet(truth, geom, dose_fraction=1.0, snr=SNR, oversample=2, seed=0)
full = sim.full
def hf_snr(v):
    # SNR of the high-pass part (|k| > 0.15 cycles/px), where angular undersampling aliases
    ft, fv = np.fft.fftn(truth), np.fft.fftn(v)
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n)**2 for n in truth.shape], indexing="ij")))
    hp = k > 0.15
    return 10*np.log10(np.sum(np.abs(ft[hp])**2)/np.sum(np.abs(ft[hp]-fv[hp])**2))
for f, seed in ((0.2, 101), (0.1, 102)):
    idx = uniform_tilt_subset(geom.n_tilts, f)
    mask = random_scan_mask(geom.tilt_series_shape, f, seed=seed)
    data = np.where(mask, full, np.float32(0.0))
    a = reconstruct_tds(full, geom, tilt_indices=idx, tv_lambda=1.0, volume_shape=SHAPE, **SOLVER).x.numpy()
    b = reconstruct_stet(data, mask, geom, tv_lambda=1.0, volume_shape=SHAPE, **SOLVER).x.numpy()
    s = lambda v, m: 10*np.log10(np.sum(truth[m]**2)/np.sum((truth[m]-v[m])**2))
    print(f, f"filament-voxel SNR T-DS {s(a,thin):.2f} I-DS {s(b,thin):.2f} | high-pass SNR T-DS {hf_snr(a):.2f} I-DS {hf_snr(b):.2f}", flush=True)
