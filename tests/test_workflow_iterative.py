"""Iterative reconstruction workflow: data scaling, checkpoints and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge import TiltGeometry, TiltProjector
from cryowedge.config.models import ReconstructConfig
from cryowedge.workflows.checkpoint import load_checkpoint
from cryowedge.workflows.reconstruct import reconstruct_array


@pytest.fixture
def problem(rng):
    geom = TiltGeometry(tilt_angles_deg=np.arange(-60, 61, 10.0), detector_shape=(4, 20))
    truth = torch.as_tensor(rng.random((20, 4, 20)), dtype=torch.float32)
    data = TiltProjector(geom, (20, 4, 20))(truth).numpy() * 1000.0  # counts-like scale
    return geom, data


def test_normalisation_makes_sirt_scale_equivariant(problem):
    geom, data = problem
    cfg = ReconstructConfig(method="sirt", n_iter=5, device="cpu")
    a = reconstruct_array(data, geom, cfg)
    b = reconstruct_array(data * 7.0, geom, cfg)
    np.testing.assert_allclose(b, 7.0 * a, rtol=1e-4, atol=1e-3)


def test_tv_lambda_is_scale_free_with_normalisation(problem):
    geom, data = problem
    cfg = ReconstructConfig(method="tv", n_iter=5, tv_lambda=2.0, device="cpu")
    a = reconstruct_array(data, geom, cfg)
    b = reconstruct_array(data * 0.01, geom, cfg)
    np.testing.assert_allclose(b, 0.01 * a, rtol=1e-3, atol=1e-4 * np.abs(a).max())


def test_tv_lambda_is_the_solver_lambda_on_unit_std_data(problem):
    """One TV-weight convention (shared with ``stet reconstruct``): λ acts on data / std(data)."""
    from cryowedge.solvers import tv_admm

    geom, data = problem
    cfg = ReconstructConfig(method="tv", n_iter=4, cg_iter=5, tv_lambda=2.0, positivity=True, device="cpu")
    ours = reconstruct_array(data, geom, cfg)
    b = torch.as_tensor(data)
    scale = float(b.double().std())
    direct = tv_admm(TiltProjector(geom, (20, 4, 20)), b / scale, n_iter=4, cg_iter=5, lam=2.0,
                     positivity=True).x.numpy() * scale
    np.testing.assert_allclose(ours, direct, rtol=1e-4, atol=1e-5 * np.abs(direct).max())
    # and λ matters: a 10× larger weight gives a visibly different (smoother) tomogram
    smoother = reconstruct_array(data, geom, cfg.updated(tv_lambda=20.0))
    assert np.abs(smoother - ours).max() > 1e-2 * np.abs(ours).max()


class _Crash(Exception):
    pass


def test_sirt_checkpoint_resume_is_exact(problem, tmp_path):
    geom, data = problem
    ckpt = tmp_path / "tomo.ckpt.pt"
    cfg = ReconstructConfig(method="sirt", n_iter=7, checkpoint_every=2, device="cpu")
    reference = reconstruct_array(data, geom, cfg.updated(checkpoint_every=None))

    def crash_at_6(info):
        if info.iteration == 6:
            raise _Crash

    with pytest.raises(_Crash):
        reconstruct_array(data, geom, cfg, checkpoint_path=ckpt, callback=crash_at_6)
    state = load_checkpoint(ckpt, method="sirt", data_shape=data.shape, volume_shape=(20, 4, 20))
    assert state.iterations_done == 4  # saved at 2 and 4; the crash came before 6 was saved
    resumed = reconstruct_array(data, geom, cfg, checkpoint_path=ckpt, resume=True)
    np.testing.assert_allclose(resumed, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_resume_refuses_a_checkpoint_of_another_method(problem, tmp_path):
    geom, data = problem
    ckpt = tmp_path / "tomo.ckpt.pt"
    cfg = ReconstructConfig(method="sirt", n_iter=3, checkpoint_every=1, device="cpu")

    def crash(info):
        if info.iteration == 2:
            raise _Crash

    with pytest.raises(_Crash):
        reconstruct_array(data, geom, cfg, checkpoint_path=ckpt, callback=crash)
    with pytest.raises(ValueError, match="for method 'sirt', not 'tv'"):
        reconstruct_array(data, geom, cfg.updated(method="tv"), checkpoint_path=ckpt, resume=True)


def test_file_workflow_removes_checkpoint_after_success(tmp_path, problem):
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_files import write_tilt_angles
    from cryowedge.workflows.reconstruct import reconstruct_file

    geom, data = problem
    write_mrc(tmp_path / "ts.mrc", data.astype(np.float32), voxel_size_angstrom=3.0, image_stack=True)
    write_tilt_angles(tmp_path / "ts.tlt", geom.tilt_angles_deg)
    out = reconstruct_file(tmp_path / "ts.mrc", tmp_path / "tomo.mrc",
                           ReconstructConfig(method="sart", n_iter=3, checkpoint_every=1, device="cpu"))
    assert out.exists() and not (tmp_path / "tomo.ckpt.pt").exists()
