"""PNG figures: written atomically as real PNGs, figures closed afterwards."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_orthoslice_figure_has_three_central_slices_in_one_clipped_window():
    from cryowedge.viz import orthoslice_figure, percentile_limits

    rng = np.random.default_rng(1)
    vol = rng.random((8, 12, 16)).astype(np.float32)  # values in [0, 1)
    vol[4, 6, 8] = 1e6  # one hot voxel at the centre: on all three central slices
    fig = orthoslice_figure(vol, voxel_size_angstrom=7.5, percentile=1.0, title="t.mrc")
    try:
        axes = fig.get_axes()
        titles = [ax.get_title() for ax in axes]
        assert titles == ["XY (central z)", "YZ (central x)", "XZ (central y)"]
        images = [ax.get_images()[0] for ax in axes]
        # the slices through the centre voxel, XY (y, x), YZ drawn (y, z), XZ (z, x)
        np.testing.assert_array_equal(images[0].get_array(), vol[4])
        np.testing.assert_array_equal(images[1].get_array(), vol[:, :, 8].T)
        np.testing.assert_array_equal(images[2].get_array(), vol[:, 6, :])
        for image in images:  # percentile window: the outlier does not set the top of the range
            lo, hi = image.get_clim()
            assert 0.0 <= lo < 0.05 and 0.95 < hi < 1.0
        assert "7.5 Å/voxel" in fig._suptitle.get_text() and "t.mrc" in fig._suptitle.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    # without clipping the outlier is the top of the window
    assert percentile_limits(vol, 0.0)[1] == 1e6
    assert percentile_limits(np.full((3, 3), 2.0)) == (1.5, 2.5)  # constant image still displays


def test_orthoslice_png_is_written_with_the_layout_aspect(tmp_path):
    from matplotlib import image as mpimg

    from cryowedge.viz import orthoslice_png

    before = set(_open_figures())
    thin = np.random.default_rng(2).random((16, 64, 64))  # (z, y, x): a thin slab
    path = orthoslice_png(thin, tmp_path / "preview.png", voxel_size_angstrom=10.0)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert set(_open_figures()) == before
    height, width = mpimg.imread(path).shape[:2]
    # XY + YZ across (64 + 16), XY + XZ down (64 + 16) plus the title: about square
    assert 0.8 < height / width < 1.3
    with pytest.raises(ValueError, match="percentile"):
        orthoslice_png(thin, tmp_path / "bad.png", percentile=60)
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        orthoslice_png(thin[0], tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]


def test_orthoslice_panel_has_xy_xz_and_yz_rows(tmp_path, monkeypatch):
    from cryowedge.viz import figures

    seen = {}
    real_save = figures.save_png

    def spy(fig, path):
        seen["labels"] = [ax.get_ylabel() for ax in fig.get_axes()]
        seen["n"] = len(fig.get_axes())
        return real_save(fig, path)

    monkeypatch.setattr(figures, "save_png", spy)
    rng = np.random.default_rng(3)
    volumes = {"a": rng.random((4, 6, 8)), "b": rng.random((4, 6, 8))}
    figures.orthoslice_panel(volumes, tmp_path / "p.png")
    assert seen["n"] == 6
    assert [label for label in seen["labels"] if label] == ["XY", "XZ", "YZ"]


def test_fsc_plot_marks_every_crossing(tmp_path, monkeypatch):
    from cryowedge.viz import figures

    marked = {}
    real_save = figures.save_png

    def spy(fig, path):
        ax = fig.get_axes()[0]
        circles = [line for line in ax.get_lines() if line.get_marker() == "o"]
        marked["points"] = [(float(x), float(y)) for line in circles
                            for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)]
        return real_save(fig, path)

    monkeypatch.setattr(figures, "save_png", spy)
    freq = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    corr = np.array([0.9, 0.4, 0.8, 0.3, 0.1])  # 0.5 crossed down twice; 0.143 once
    figures.fsc_plot({"a": (freq, corr)}, tmp_path / "f.png", pixel_size_angstrom=1.0)
    at_half = sorted(x for x, y in marked["points"] if y == 0.5)
    # open circles at 0.18 and 0.36, the filled "stays below" one again at 0.36
    np.testing.assert_allclose(at_half, [0.18, 0.36, 0.36])
    assert sum(1 for _, y in marked["points"] if y == 0.143) == 2
