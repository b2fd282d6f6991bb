"""dewedge refine: tiled inference (exact blending, reflection, OOM back-off, wedge), files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.dewedge.prepare import prepare_halves
from cryowedge.dewedge.refine import (
    TileLayout,
    blend_weights_1d,
    refine_array,
    refine_file,
    refine_prepared,
)
from cryowedge.dewedge.standardize import robust_stats
from cryowedge.geometry.wedge import wedge_mask
from cryowedge.io.mrc import read_mrc, write_mrc


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _OutOfMemoryAbove(torch.nn.Module):
    """Identity that fails like a full GPU for batches larger than ``limit``."""

    def __init__(self, limit: int, error: type[BaseException] = torch.cuda.OutOfMemoryError,
                 message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> None:
        super().__init__()
        self.limit, self.error, self.message = limit, error, message
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise self.error(self.message)
        return x


@pytest.mark.parametrize("n,size,overlap", [(37, 16, 5), (16, 16, 5), (5, 16, 5), (100, 24, 0),
                                            (41, 12, 11)])
def test_blend_weights_sum_to_one(n: int, size: int, overlap: int) -> None:
    starts, weights = blend_weights_1d(n, size, overlap)
    total = np.zeros(n)
    for s0, w in zip(starts, weights, strict=True):
        inside = (np.arange(size) + s0 >= 0) & (np.arange(size) + s0 < n)
        assert np.all(w[~inside] == 0) and np.all(w[inside] > 0)
        total[s0 + np.flatnonzero(inside)] += w[inside]
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)
    assert starts[0] <= 0 and starts[-1] + size >= n  # the tiles cover the axis
    assert np.all(np.diff(starts) == size - overlap)


@pytest.mark.parametrize("shape", [(13, 40, 37), (50, 20, 9), (5, 6, 7), (16, 16, 16),
                                   (33, 70, 41)])
def test_identity_network_returns_the_input_exactly(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    vol = (rng.normal(size=shape) * 1e-6 + 3e-6).astype(np.float32)  # tiny voxel values
    stats = robust_stats(vol)
    for overlap, batch in ((None, 3), (0, 1), (7, 64)):
        out = refine_array(vol, _identity, subtomo_size=16, overlap=overlap, batch_size=batch,
                           stats=stats, device="cpu")
        assert out.dtype == np.float32 and out.shape == shape
        np.testing.assert_allclose(out, vol, rtol=0, atol=1e-6 * np.abs(vol).max())
    # averaging two sources, and an affine network: exact too (the weights sum to 1)
    other = (vol * 3).astype(np.float32)
    out = refine_array([vol, other], lambda x: 2 * x + 1, subtomo_size=16, device="cpu")
    np.testing.assert_allclose(out, (2 * vol + 1 + 2 * other + 1) / 2, rtol=1e-6, atol=1e-6)


def test_tiles_are_reflected_at_the_borders() -> None:
    """A network that returns the tile's mirror image along x sees reflected margins."""
    vol = np.arange(8 * 8 * 10, dtype=np.float32).reshape(8, 8, 10)
    seen: list[np.ndarray] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x[:, 0].numpy().copy())
        return x

    refine_array(vol, spy, subtomo_size=12, overlap=0, device="cpu")
    tile = seen[0][0]  # one 12³ tile covering the 8×8×10 volume, starting at -2 / -1
    layout = TileLayout.for_volume(vol.shape, 12, 0)
    assert [int(s[0]) for s in layout.starts] == [-2, -2, -1]
    np.testing.assert_array_equal(tile[2:10, 2:10, 1:11], vol)
    np.testing.assert_array_equal(tile[0], tile[4])  # row -2 is row 2: 'reflect' mode
    np.testing.assert_array_equal(tile[2:10, 2:10, 0], vol[:, :, 1])


def test_out_of_memory_halves_the_batch_and_keeps_it() -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(20, 60, 40)).astype(np.float32)
    model = _OutOfMemoryAbove(2)
    out = refine_array(vol, model, subtomo_size=16, batch_size=8, device="cpu")
    np.testing.assert_allclose(out, vol, rtol=0, atol=1e-5)
    assert model.calls[:3] == [8, 4, 2]
    assert max(model.calls[3:]) <= 2  # the smaller batch is kept afterwards
    # the message torch gives for a failed CPU allocation or an older CUDA error
    model = _OutOfMemoryAbove(1, RuntimeError, "CUDA error: out of memory")
    out = refine_array(vol, model, subtomo_size=16, batch_size=3, device="cpu")
    np.testing.assert_allclose(out, vol, rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="single 16³ tile"):
        refine_array(vol, _OutOfMemoryAbove(0), subtomo_size=16, batch_size=4, device="cpu")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        refine_array(vol, _OutOfMemoryAbove(0, RuntimeError, "shape mismatch"),
                     subtomo_size=16, device="cpu")
    with pytest.raises(ValueError, match="same shape"):
        refine_array(vol, lambda x: x[:, :, :8], subtomo_size=16, device="cpu")


def test_wedge_is_removed_from_each_tile_as_in_fitting() -> None:
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(16, 16, 16)).astype(np.float32)  # exactly one tile
    out = refine_array(vol, _identity, subtomo_size=16, device="cpu",
                       wedge_tilt_angles_deg=[-48.0, 57.0])
    mask = wedge_mask((16, 16, 16), [-48.0, 57.0], rfft=True)
    expected = torch.fft.irfftn(torch.fft.rfftn(torch.from_numpy(vol)) * mask, s=(16, 16, 16))
    np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=1e-5)
    assert np.abs(out - vol).max() > 0.1  # the wedge was really removed


def _write(path: Path, data: np.ndarray, voxel=6.25, origin=(12.5, -3.0, 40.0)) -> Path:
    write_mrc(path, data, voxel_size_angstrom=voxel, origin_angstrom=origin)
    return path


@pytest.mark.parametrize("shape", [(12, 30, 22), (40, 20, 24)])  # bands along y, then z
def test_refine_file_keeps_voxel_size_and_origin(tmp_path: Path, shape) -> None:
    rng = np.random.default_rng(2)
    a = _write(tmp_path / "a.mrc", rng.normal(size=shape).astype(np.float32))
    b = _write(tmp_path / "b.mrc", rng.normal(size=shape).astype(np.float32))
    steps: list[str] = []
    result = refine_file([a, b], tmp_path / "r.mrc", _identity, subtomo_size=16,
                         batch_size=5, device="cpu", progress=lambda s, f: steps.append(s))
    out = read_mrc(result.output_path)
    assert out.voxel_size_angstrom == (6.25,) * 3 and out.origin_angstrom == (12.5, -3.0, 40.0)
    expected = (read_mrc(a).data + read_mrc(b).data) / 2
    np.testing.assert_allclose(out.data, expected, rtol=0, atol=1e-5)
    assert steps[-1] == f"tiles {2 * result.n_tiles}/{2 * result.n_tiles}"
    record = yaml.safe_load(result.record_path.read_text())
    assert record["command"] == "dewedge refine" and record["parameters"]["sources"] == [
        "a.mrc", "b.mrc"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    with pytest.raises(FileExistsError):
        refine_file(a, tmp_path / "r.mrc", _identity, subtomo_size=16, device="cpu")
    with pytest.raises(ValueError, match="is the input"):
        refine_file(a, a, _identity, subtomo_size=16, device="cpu", overwrite=True)


def test_refine_file_refuses_halves_of_different_voxel_size(tmp_path: Path) -> None:
    data = np.ones((8, 8, 8), np.float32)
    a = _write(tmp_path / "a.mrc", data)
    b = _write(tmp_path / "b.mrc", data, voxel=7.0)
    with pytest.raises(ValueError, match="different voxel sizes"):
        refine_file([a, b], tmp_path / "r.mrc", _identity, subtomo_size=8, device="cpu")
    c = _write(tmp_path / "c.mrc", data[:, :, :6])
    with pytest.raises(ValueError, match="different shapes"):
        refine_file([a, c], tmp_path / "r.mrc", _identity, subtomo_size=8, device="cpu")
    assert not (tmp_path / "r.mrc").exists()


def test_refine_prepared_halves_and_full(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(16, 24, 24)).astype(np.float32) * 1e-6
    a = _write(tmp_path / "even.mrc", base + rng.normal(size=base.shape).astype(np.float32) * 1e-7)
    b = _write(tmp_path / "odd.mrc", base + rng.normal(size=base.shape).astype(np.float32) * 1e-7)
    cfg = DewedgeConfig.model_validate({
        "shared": {"subtomo_size": 16, "depth": 2, "device": "cpu"},
        "prepare": {"min_mask_fraction": 0.0},
        "refine": {"mask_wedge": False, "band_limit": False}})
    data = prepare_halves((a, b), tmp_path / "prep", tilt_angles=(-60, 60), config=cfg)
    mean = (read_mrc(a).data + read_mrc(b).data) / 2
    for source in ("halves", "full"):  # no full tomogram: the mean of the halves stands in
        (result,) = refine_prepared(data, _identity, tmp_path / source, source=source)
        out = read_mrc(result.output_path)
        assert result.output_path.name == "even_refined.mrc"
        assert out.voxel_size_angstrom == (6.25,) * 3 and out.origin_angstrom == (12.5, -3, 40)
        np.testing.assert_allclose(out.data, mean, rtol=0, atol=1e-6 * np.abs(mean).max())
    # dewedge mode masks the wedge by default: no longer the identity
    (masked,) = refine_prepared(tmp_path / "prep", _identity, tmp_path / "wedge",
                                config=cfg.model_copy(update={"refine": cfg.refine.model_copy(
                                    update={"mask_wedge": None})}))
    assert np.abs(read_mrc(masked.output_path).data - mean).max() > 1e-8


def test_band_limit_keeps_only_the_fitted_band(tmp_path: Path) -> None:
    """With ``band_radius`` each output tile keeps only ``|k| <= radius``: white noise through
    an identity network loses its cube corners (most of its power), and nothing else changes
    inside the band (tiles are blended, so the check is on the spectrum of the result)."""
    rng = np.random.default_rng(4)
    noise = rng.normal(size=(32, 32, 32)).astype(np.float32)
    full = refine_array(noise, _identity, subtomo_size=32, overlap=0, device="cpu")
    banded = refine_array(noise, _identity, subtomo_size=32, overlap=0, device="cpu",
                          band_radius=0.5)
    np.testing.assert_allclose(full, noise, atol=1e-6)
    k = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(32)] * 3, indexing="ij")))
    spec_in, spec_out = np.fft.fftn(noise), np.fft.fftn(banded)
    assert np.abs(spec_out[k > 0.5 + 1e-6]).max() < 1e-3 * np.abs(spec_in).max()
    np.testing.assert_allclose(spec_out[k <= 0.5 - 1e-6], spec_in[k <= 0.5 - 1e-6],
                               atol=1e-3 * np.abs(spec_in).max())
    # the white noise's power beyond the sphere (about 48 %) is gone
    assert 0.4 < 1 - (np.abs(spec_out) ** 2).sum() / (np.abs(spec_in) ** 2).sum() < 0.6


def test_refine_checkpoint_of_a_fitted_network_keeps_units_and_header(tmp_path: Path) -> None:
    """prepare → fit (one tiny epoch) → refine: the network consumes standardised tiles, so
    the refined tomogram comes back at the input's (AreTomo-like, 1e-6) scale."""
    from cryowedge.dewedge.fit import fit
    from cryowedge.dewedge.refine import refine_checkpoint

    rng = np.random.default_rng(5)
    base = rng.normal(size=(16, 32, 32)).astype(np.float32) * 1e-6
    paths = [_write(tmp_path / f"{n}.mrc",
                    base + rng.normal(size=base.shape).astype(np.float32) * 1e-7)
             for n in ("even", "odd")]
    cfg = DewedgeConfig.model_validate({
        "shared": {"subtomo_size": 16, "depth": 2, "chans": 4, "device": "cpu"},
        "prepare": {"min_mask_fraction": 0.0},
        "fit": {"epochs": 1, "subtomos_per_epoch": 2, "batch_size": 2, "val_fraction": 0.2}})
    data = prepare_halves(tuple(paths), tmp_path / "prep", tilt_angles=(-60, 60), config=cfg)
    fitted = fit(data, output_dir=tmp_path / "fit")
    (result,) = refine_checkpoint(fitted.checkpoint_dir / "last.pt", data, tmp_path / "ref")
    out = read_mrc(result.output_path)
    assert out.voxel_size_angstrom == (6.25,) * 3 and out.origin_angstrom == (12.5, -3.0, 40.0)
    assert 0.3 < out.data.std() / base.std() < 3  # not 1e6 × off (double standardisation)
    assert np.corrcoef(out.data.ravel(), base.ravel())[0, 1] > 0.3


@pytest.mark.parametrize(("mode", "expected"), [("dewedge", "full"), ("n2n", "halves")])
def test_auto_source_is_full_for_dewedge_and_halves_for_n2n(tmp_path: Path, mode, expected):
    rng = np.random.default_rng(5)
    shape = (16, 24, 24)
    a = _write(tmp_path / "even.mrc", rng.normal(size=shape).astype(np.float32))
    b = _write(tmp_path / "odd.mrc", rng.normal(size=shape).astype(np.float32))
    f = _write(tmp_path / "full.mrc", rng.normal(size=shape).astype(np.float32))
    cfg = DewedgeConfig.model_validate({
        "shared": {"subtomo_size": 16, "depth": 2, "device": "cpu", "mode": mode,
                   "standardize": "none"},
        "prepare": {"min_mask_fraction": 0.0},
        "refine": {"mask_wedge": False, "band_limit": False}})
    assert cfg.refine.source == "auto"
    data = prepare_halves((a, b), tmp_path / "prep", tilt_angles=(-60, 60), full=f, config=cfg)
    (result,) = refine_prepared(data, _identity, tmp_path / "out")
    out = read_mrc(result.output_path).data
    want = (read_mrc(f).data if expected == "full"
            else (read_mrc(a).data + read_mrc(b).data) / 2)
    np.testing.assert_allclose(out, want, atol=1e-5)
