"""Size check of the STET comparison at 10 % dose: 48×192×192 instead of 48×96×96.

Run:  OMP_NUM_THREADS=2 python benchmarks/stet_size_check.py   (about 90 s)
Same phantom recipe (24 particles, 30 filaments), noise and solver as results_stet.py;
λ ∈ {0.3, 1, 3}; prints the SNR (dB) of T-DS + TV and I-DS + TV per λ.
"""
import sys, numpy as np, time
sys.path.insert(0, "benchmarks")
import results_stet as R
from results_stet import *
SH = (48, 192, 192)
R.SHAPE = SH
cell = make_phantom(SimulateConfig(shape=SH, pixel_size_angstrom=10.0, n_particles=24, seed=0))
truth = add_filaments(cell, 30, seed=0)
geom = TiltGeometry.from_range(-70, 70, 1, SH[1:], pixel_size_angstrom=10.0)
sim = simulate_stet(truth, geom, dose_fraction=1.0, snr=SNR, oversample=2, seed=0)
full = sim.full
for f in (0.1,):
    idx = uniform_tilt_subset(geom.n_tilts, f)
    mask = random_scan_mask(geom.tilt_series_shape, f, seed=102)
    data = np.where(mask, full, np.float32(0.0))
    for lam in (0.3, 1.0, 3.0):
        t=time.time(); a = metrics(reconstruct_tds(full, geom, tilt_indices=idx, lam=lam, volume_shape=SH, **SOLVER).x, truth)["snr_db"]
        b = metrics(reconstruct_stet(data, mask, geom, lam=lam, volume_shape=SH, **SOLVER).x, truth)["snr_db"]
        print(f, lam, f"TDS {a:.2f} IDS {b:.2f}  {time.time()-t:.0f}s", flush=True)
