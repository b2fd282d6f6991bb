"""Draw docs/figures/conventions.png (run: python docs/figures/make_conventions_figure.py)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cryowedge.viz import save_png

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4.2))

# Left: the XZ plane (perpendicular to the tilt axis y), a bead and its projection at +30°.
theta = np.deg2rad(30)
ax1.set_title("XZ slice (tilt axis y points out of the page)", fontsize=9)
ax1.arrow(0, 0, 1.0, 0, head_width=0.05, color="k")
ax1.text(1.05, -0.05, "x", fontsize=11)
ax1.arrow(0, 0, 0, 1.0, head_width=0.05, color="k")
ax1.text(-0.08, 1.05, "z (beam at 0°)", fontsize=9)
bead = np.array([0.15, 0.6])  # (x, z)
ax1.plot(*bead, "o", color="C3")
ax1.text(bead[0] + 0.05, bead[1], "bead (x, z)", color="C3", fontsize=8)
u_dir = np.array([np.cos(theta), np.sin(theta)])
ax1.plot([-1.1 * u_dir[0], 1.1 * u_dir[0]], [-1.1 * u_dir[1], 1.1 * u_dir[1]], color="C0", lw=2)
ax1.text(0.9 * u_dir[0], 0.9 * u_dir[1] - 0.15, "detector u at θ = +30°", color="C0", fontsize=8)
u = bead @ u_dir
foot = u * u_dir
ax1.plot([bead[0], foot[0]], [bead[1], foot[1]], "--", color="C3")
ax1.text(-1.15, -1.05, "u = x·cosθ + z·sinθ  (centred pixels)\nz > 0 moves to +x at θ > 0", fontsize=8)
ax1.set_xlim(-1.2, 1.3)
ax1.set_ylim(-1.15, 1.25)
ax1.set_aspect("equal")
ax1.axis("off")

# Right: a raw detector image with the tilt axis at an in-plane angle.
phi = np.deg2rad(30)
ax2.set_title("raw image (n_tilts, y, x): tilt-axis angle φ", fontsize=9)
ax2.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False))
ax2.plot(0, 0, "k+", ms=10)
ax2.text(0.05, -0.12, "centre (ny//2, nx//2)", fontsize=8)
ax2.arrow(-1, -1, 0.4, 0, head_width=0.04, color="k")
ax2.text(-0.55, -1.12, "x", fontsize=10)
ax2.arrow(-1, -1, 0, 0.4, head_width=0.04, color="k")
ax2.text(-1.1, -0.55, "y", fontsize=10)
axis = np.array([-np.sin(phi), np.cos(phi)])
ax2.plot([-axis[0], axis[0]], [-axis[1], axis[1]], color="C2", lw=2)
ax2.arrow(0, 0, 0.8 * axis[0], 0.8 * axis[1], head_width=0.05, color="C2")
ax2.plot([0, 0], [0, 0.9], ":", color="0.5")
ax2.text(-0.55, 0.95, "tilt axis, φ counter-clockwise from +Y", color="C2", fontsize=8)
ax2.text(-1.0, -1.35, "φ = 0: aligned (IMOD); needle series: φ = −90°", fontsize=8)
ax2.set_xlim(-1.2, 1.2)
ax2.set_ylim(-1.45, 1.2)
ax2.set_aspect("equal")
ax2.axis("off")
save_png(fig, Path(__file__).with_name("conventions.png"))
