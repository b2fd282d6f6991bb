"""PNG figures: written atomically as real PNGs, figures closed afterwards."""

from __future__ import annotations

import numpy as np

from cryowedge.viz import fsc_plot, orthoslice_panel, save_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _open_figures() -> list[int]:
    import matplotlib.pyplot as plt

    return list(plt.get_fignums())


def test_save_png_writes_a_png_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "line.png")
    assert path == tmp_path / "line.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert fig.number not in _open_figures()
    assert [p.name for p in tmp_path.iterdir()] == ["line.png"]  # no temporary left behind


def test_orthoslices_and_fsc_plot_are_pngs(tmp_path):
    rng = np.random.default_rng(0)
    before = set(_open_figures())
    ortho = orthoslice_panel({"a": rng.random((4, 6, 6)), "b": rng.random((4, 6, 6))}, tmp_path / "o.png",
                             pixel_size_angstrom=10.0)
    freq = np.linspace(0, 0.5, 10)
    fsc = fsc_plot({"a": (freq, np.cos(freq))}, tmp_path / "f.png", pixel_size_angstrom=10.0)
    for path in (ortho, fsc):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert set(_open_figures()) == before
