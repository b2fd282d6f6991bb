"""How time and memory grow with the problem: in-memory FBP/SIRT by size, and streaming.

Run:  OMP_NUM_THREADS=2 python benchmarks/bench_scale.py [--quick] [cryowedge bench scale options]
Same code as ``cryowedge bench scale`` (this script forwards its arguments to it): time and
peak RSS (each case in a fresh process) of FBP and SIRT-20 for 256³, 512³ and a bin-4 K3
series (61 tilts of 1440 × 1023, thickness 300); a streamed FBP of a 2.1 GB volume in a
process limited to 2 GB of address space, compared on some rows with the in-memory result;
the same with a quarter of the rows (peak RSS must not grow with y). Last line:
``streamed_peak_rss_gb: N``.
"""

from __future__ import annotations

import sys

from cryowedge.cli import app

if __name__ == "__main__":
    app(["bench", "scale", *sys.argv[1:]])
