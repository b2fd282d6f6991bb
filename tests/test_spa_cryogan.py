"""CryoGAN (issue 14 part 2): simulator, gradient penalty, constraints, resume, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.config.spa_cryogan import CryoGanConfig, preset_config
from cryowedge.spa import SIMULATION_BLOB, SpaProjector, expand
from cryowedge.spa.cryogan import (
    CryoGan,
    CryoGanSimulator,
    Discriminator,
    Latent,
    align_maps,
    gradient_penalty,
    interpolates,
    mirror_x,
    symmetrize,
    symmetry_matrices,
    train_cryogan,
)
from cryowedge.spa.particles import ParticleStack
from cryowedge.spa.simulate import simulate_spa

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_sim():
    """16³ noise-free particles of the bundled 1A5T map with CTF and shifts, clean images kept."""
    return simulate_spa(
        "1a5t",
        box_size=16,
        n_particles=6,
        snr=None,
        ctf=True,
        max_shift_px=2.0,
        keep_clean=True,
        seed=3,
    )


def test_simulator_matches_projector_and_simulate_spa(small_sim):
    """Fixed poses, shifts and CTFs: the generator's noiseless images are the projector's and
    the ones simulate_spa made from the same coefficients (two code paths for the CTF)."""
    st = small_sim.stack
    sim = CryoGanSimulator(
        16, st.pixel_size_angstrom, ctf=st.ctf, blob="simulation", dtype=torch.float64
    )
    with torch.no_grad():
        sim.volume.copy_(torch.as_tensor(small_sim.coefficients))
    lat = Latent(
        small_sim.true_rotations, np.array(st.shifts_px), np.arange(6), torch.zeros(6, 16, 16)
    )
    got = sim.noiseless(lat).detach().numpy()
    from cryowedge.spa.ctf_model import stack_ctfs

    op = SpaProjector(
        16,
        small_sim.true_rotations,
        np.array(st.shifts_px),
        blob=SIMULATION_BLOB,
        ctf=stack_ctfs(st, rfft=True),
        dtype=torch.float64,
    )
    want = op.forward(torch.as_tensor(small_sim.coefficients)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12 * np.abs(want).max())
    clean = small_sim.clean_images
    assert np.abs(got - clean).max() < 1e-5 * np.abs(clean).max()
    # Noise: simulate() adds exactly σ·n.
    noise = torch.randn(6, 16, 16, dtype=torch.float64)
    lat2 = Latent(lat.rotations, lat.shifts_px, lat.ctf_index, noise)
    diff = sim.simulate(lat2).detach() - sim.noiseless(lat2).detach()
    torch.testing.assert_close(diff, sim.noise_scale.detach() * noise)


def test_gradient_reaches_volume_as_adjoint(small_sim):
    """d/dc ⟨w, H c⟩ = Hᵀ w: the volume's gradient is the projector's adjoint (float64)."""
    st = small_sim.stack
    sim = CryoGanSimulator(16, st.pixel_size_angstrom, ctf=st.ctf, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    lat = sim.sample_latent(4, g)
    w = torch.randn(4, 16, 16, dtype=torch.float64, generator=g)
    (sim.noiseless(lat) * w).sum().backward()
    op = sim.projector(lat.rotations, lat.shifts_px, sim.ctf_half(lat.ctf_index))
    torch.testing.assert_close(sim.volume.grad, op.adjoint(w))
    assert sim.volume.grad.abs().max() > 0


def test_gradient_penalty_on_interpolates():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(5, 8, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(5, 8, 8, generator=g, dtype=torch.float64)
    alpha = torch.rand(5, generator=g, dtype=torch.float64)
    # D(x) = ½‖x‖²: ∇D = x, so the penalty is mean (‖b_int‖ − 1)², different at real/fake.
    quad = lambda x: 0.5 * (x**2).flatten(1).sum(1)  # noqa: E731
    gp, pts = gradient_penalty(quad, real, fake, alpha)
    want_pts = alpha[:, None, None] * real + (1 - alpha[:, None, None]) * fake
    torch.testing.assert_close(pts.detach(), want_pts)
    torch.testing.assert_close(gp, ((want_pts.flatten(1).norm(dim=1) - 1) ** 2).mean())
    assert not torch.allclose(gp, ((real.flatten(1).norm(dim=1) - 1) ** 2).mean())
    # A linear critic with a unit gradient has zero penalty; with gradient norm 2, one.
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    a /= a.norm()
    lin = lambda x, s=1.0: (s * a * x).flatten(1).sum(1)  # noqa: E731
    assert float(gradient_penalty(lin, real, fake, alpha)[0]) == pytest.approx(0.0, abs=1e-12)
    gp2 = gradient_penalty(lambda x: lin(x, 2.0), real, fake, alpha)[0]
    assert float(gp2) == pytest.approx(1.0)
    # The real critic: the penalty has a non-zero gradient w.r.t. its parameters.
    disc = Discriminator(16, channels=4, n_blocks=6)
    assert disc.n_blocks == 4
    r = torch.randn(3, 16, 16, generator=g)
    f = torch.randn(3, 16, 16, generator=g)
    gp3, _ = gradient_penalty(disc, r, f, torch.rand(3, generator=g))
    grads = torch.autograd.grad(gp3, list(disc.parameters()), allow_unused=True)
    total = sum(float(x.abs().sum()) for x in grads if x is not None)
    assert total > 0
    torch.testing.assert_close(interpolates(r, f, torch.ones(3)), r)


def _tiny_gan(sim, **changes) -> CryoGan:
    cfg = preset_config("cpu-small", batch_size=4, n_discr=2, channels=4, **changes)
    st = sim.stack
    return CryoGan(st.images, st.pixel_size_angstrom, cfg, ctf=st.ctf, seed=5)


@pytest.mark.parametrize("symmetry", ["C1", "D2"])
def test_constraints_hold_after_a_step(small_sim, symmetry):
    gan = _tiny_gan(small_sim, symmetry=symmetry)
    assert float(gan.simulator.volume.detach().abs().max()) == 0.0  # zero initialisation
    gan.train_iteration()
    v = gan.simulator.volume.detach()
    assert float(v.abs().max()) > 0  # it moved
    assert float(v.min()) >= 0.0  # positivity
    assert float(v[~gan.simulator.support].abs().max()) == 0.0  # spherical support
    if symmetry != "C1":
        torch.testing.assert_close(symmetrize(v, symmetry_matrices(symmetry)), v)


def test_symmetry_groups_and_idempotence():
    assert symmetry_matrices("C1").shape == (1, 3, 3)
    assert symmetry_matrices("D2").shape == (4, 3, 3)
    m = symmetry_matrices("C4")
    np.testing.assert_allclose(np.einsum("gij,gkj->gik", m, m), np.broadcast_to(np.eye(3), m.shape))
    # Exact on voxels whose images stay on the grid (the support ball; x = −6 has no +6).
    from cryowedge.spa.refine import sphere_mask

    v = torch.rand(12, 12, 12, generator=torch.Generator().manual_seed(0))
    v = v * torch.as_tensor(sphere_mask(12, 5.0))
    s = symmetrize(v, symmetry_matrices("D2"))
    torch.testing.assert_close(symmetrize(s, symmetry_matrices("D2")), s)
    with pytest.raises(ValueError, match="Cn or Dn"):
        symmetry_matrices("I3")
    with pytest.raises(ValueError, match="symmetry"):
        CryoGanConfig(symmetry="O")


def test_align_maps_recovers_rotation_and_mirror():
    from cryowedge.geometry.rotations import euler_zyz_to_matrix
    from cryowedge.operators.rotation import Rotation3D

    truth = simulate_spa("1a5t", box_size=16, n_particles=2, snr=None).truth
    r = euler_zyz_to_matrix(40.0, 70.0, -20.0)
    moved = mirror_x(Rotation3D((16,) * 3, r).forward(torch.as_tensor(truth)).numpy())
    res = align_maps(moved, truth, n_rotations=300, refine_candidates=30)
    assert res.mirrored
    assert res.correlation > 0.9
    assert np.corrcoef(res.aligned.ravel(), truth.ravel())[0, 1] > 0.9


def test_radial_threshold_floor():
    from cryowedge.spa.cryogan.simulator import radial_threshold

    v = torch.rand(9, 9, 9, generator=torch.Generator().manual_seed(3)) - 0.2
    # No floor: plain positivity.
    torch.testing.assert_close(radial_threshold(v.clone(), 4.0, 0.0, 0.0), v.clamp(min=0))
    out = radial_threshold(v.clone(), 4.0, 0.1, 0.3)
    vmax = float(v.max())
    ax = torch.arange(9.0) - 4
    r = torch.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    floor = vmax * (0.1 + 0.3 * r / 4.0)
    keep = v >= floor
    torch.testing.assert_close(out[keep], v[keep])
    assert float(out[~keep].abs().max()) == 0.0
    # The floor grows with the radius: more is removed in the outer shell than at the centre.
    inner, outer = r <= 2, r >= 3
    assert keep[inner].float().mean() > keep[outer].float().mean()


def test_highpass_filter_removes_low_frequencies_only():
    from cryowedge.spa.cryogan.simulator import highpass_filter

    n = 16
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64),) * 3, indexing="ij")
    low = 1.0 + torch.cos(2 * torch.pi * 1 * x / n)  # 0 and 1/16 cycles/voxel
    high = torch.cos(2 * torch.pi * 6 * y / n)  # 6/16 = 0.375 cycles/voxel
    out = highpass_filter(low + high, cutoff_cycles_per_voxel=0.2)
    torch.testing.assert_close(out, high, atol=1e-10, rtol=0)


def test_gaussian_blur_matches_scipy_and_keeps_the_mean():
    from scipy.ndimage import gaussian_filter

    from cryowedge.spa.cryogan.discriminator import gaussian_blur

    img = torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = gaussian_blur(img, 2.0)
    ref = np.stack([gaussian_filter(a, 2.0, mode="wrap", truncate=6.0) for a in img.numpy()])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-4)
    torch.testing.assert_close(out.mean(dim=(1, 2)), img.mean(dim=(1, 2)))
    assert gaussian_blur(img, 0.0) is img


def test_learned_signal_scale_multiplies_the_projections(small_sim):
    st = small_sim.stack
    sim = CryoGanSimulator(16, st.pixel_size_angstrom, ctf=st.ctf, learn_signal_scale=True)
    with torch.no_grad():
        sim.volume.copy_(torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(0)))
        sim.log_signal_scale.fill_(np.log(2.5))
    latent = sim.sample_latent(3, torch.Generator().manual_seed(4))
    out = sim.simulate(latent)
    clean = sim.noiseless(latent).detach()
    torch.testing.assert_close(out.detach(), 2.5 * clean + sim.noise_scale.detach() * latent.noise)
    out.square().sum().backward()
    assert float(sim.log_signal_scale.grad.abs()) > 0


def test_two_stage_schedule_restarts_and_highpasses(small_sim):
    # A cutoff of half Nyquist, so that the low band holds more than the DC term at 16³.
    gan = _tiny_gan(
        small_sim,
        stage1_epochs=1,
        max_shift_px=1.5,
        positivity=False,
        stage2_highpass_fraction_nyquist=0.5,
    )
    gan.run_epoch()
    assert gan.simulator.max_shift_px == 0.0  # stage 1: no shifts
    lr_after_stage1 = gan.opt_g.param_groups[0]["lr"]
    assert lr_after_stage1 < gan.config.lr_volume  # decayed
    before = gan.simulator.volume.detach().clone()
    gan.run_epoch()  # stage 2
    assert gan.in_stage2 and gan.simulator.max_shift_px == 1.5
    # The optimiser restarted at the initial rate (then decayed once at the epoch's end).
    assert gan.opt_g.param_groups[0]["lr"] == pytest.approx(lr_after_stage1)
    # Only the support mask (a product) can move the low frequencies after stage 1: measured
    # 1.4 % of the update's energy there, 13 % without the high-pass.
    delta = (gan.simulator.volume.detach() - before).to(torch.float64)
    spec = torch.fft.fftn(delta)
    k = torch.fft.fftfreq(16, dtype=torch.float64)
    mag = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    cutoff = 0.5 * gan.config.stage2_highpass_fraction_nyquist - 1 / 16
    low_energy = float(spec[mag <= cutoff].abs().square().sum())
    assert float(delta.abs().max()) > 0
    assert low_energy < 0.04 * float(spec.abs().square().sum())


def _resume_setup(tmp_path, name, epochs, **changes):
    sim = simulate_spa("1a5t", box_size=16, n_particles=32, snr=1.0, ctf=True, seed=1)
    cfg = preset_config(
        "cpu-small",
        **changes,
        epochs=epochs,
        batch_size=4,
        n_discr=2,
        channels=4,
        align_rotations=50,
        fsc_every=0,
    )
    return sim.stack, cfg, tmp_path / name


# The thesis's schedules (blur, radial floor, two stages, signal scale) resume exactly too.
_SCHEDULES = {
    "blur_sigma_px": 2.0,
    "stage1_epochs": 1,
    "learn_signal_scale": True,
    "radial_floor_ramp_epochs": 2.0,
}


@pytest.mark.parametrize("changes", [{}, _SCHEDULES], ids=["plain", "schedules"])
def test_resume_continues_identically(tmp_path, changes):
    stack, cfg2, out_a = _resume_setup(tmp_path, "a", 2, **changes)
    full = train_cryogan(stack, cfg2, out_dir=out_a)
    _, cfg1, out_b = _resume_setup(tmp_path, "b", 1, **changes)
    train_cryogan(stack, cfg1, out_dir=out_b)
    resumed = train_cryogan(stack, cfg2, out_dir=out_b, resume=True)
    assert [r.epoch for r in resumed.history] == [1, 2]
    np.testing.assert_array_equal(resumed.half_maps[0], full.half_maps[0])
    np.testing.assert_array_equal(resumed.full_map, full.full_map)
    sa = torch.load(out_a / "cryogan.ckpt.pt", weights_only=False)
    sb = torch.load(out_b / "cryogan.ckpt.pt", weights_only=False)
    for ga, gb in zip(sa["gans"], sb["gans"], strict=True):
        torch.testing.assert_close(
            ga["simulator"]["volume"], gb["simulator"]["volume"], rtol=0, atol=0
        )
        for k in ga["discriminator"]:
            torch.testing.assert_close(
                ga["discriminator"][k], gb["discriminator"][k], rtol=0, atol=0
            )
        assert torch.equal(ga["generator"], gb["generator"])
    # A checkpoint of other settings is refused.
    with pytest.raises(ValueError, match="other data or settings"):
        train_cryogan(stack, cfg2.model_copy(update={"gp_lambda": 0.5}), out_dir=out_b, resume=True)


def test_bad_input_messages(small_sim):
    cfg = preset_config("cpu-small", batch_size=8)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_cryogan(small_sim.stack, cfg)
    with pytest.raises(ValueError, match="patches"):
        train_cryogan(small_sim.stack, cfg.model_copy(update={"noise": "patches"}))
    with pytest.raises(ValueError, match="no checkpoint"):
        train_cryogan(small_sim.stack, preset_config("cpu-small", batch_size=2), resume=True)


def _shell_data(n=16, p=48, snr=4.0, seed=0):
    """Particles of a hollow spherical shell (projections independent of the pose)."""
    ax = np.arange(n) - n // 2
    r = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    coef = np.exp(-0.5 * ((r - 4.0) / 0.8) ** 2)
    rng = np.random.default_rng(seed)
    from cryowedge.geometry.rotations import random_rotations

    op = SpaProjector(n, random_rotations(p, rng), blob=SIMULATION_BLOB, dtype=torch.float64)
    clean = op.forward(torch.as_tensor(coef)).numpy()
    sigma = np.sqrt(clean.var() / snr)
    images = clean + sigma * rng.standard_normal(clean.shape)
    truth = expand(torch.as_tensor(coef), SIMULATION_BLOB).numpy()
    return ParticleStack(images.astype(np.float32), 5.0), truth


def test_tiny_run_moves_volume_toward_truth():
    """From zero, the map of a hollow shell becomes that shell. The first volume step already
    gives a positive blob (cc ≈ 0.7, scale-free); 40 iterations must go far beyond it
    (measured: 0.99) and beyond the filled support ball (cc ≈ 0.56)."""
    stack, truth = _shell_data(p=256)
    cfg = preset_config(
        "cpu-small",
        channels=8,
        half_sets=False,
        lr_decay=0.0,
        lr_volume=3e-2,
        clip_ramp_epochs=0,
        fsc_every=0,
        seed=0,
    )
    gan = CryoGan(stack.images, stack.pixel_size_angstrom, cfg, seed=2)
    cc = lambda a: float(np.corrcoef(a.ravel(), truth.ravel())[0, 1])  # noqa: E731
    ball = expand(gan.simulator.support.double(), SIMULATION_BLOB).numpy()
    gan.train_iteration()
    first = cc(gan.voxel_map())
    for _ in range(39):
        gan.train_iteration()
    final = cc(gan.voxel_map())
    assert final > 0.93, (first, final)
    assert final > first + 0.15, (first, final)
    assert final > cc(ball) + 0.3, (final, cc(ball))


def test_patch_noise_uses_the_ctf_particles_patch(small_sim):
    """With one background patch per particle, the noise of a simulated image is the (zero-
    mean) patch of the particle whose CTF was drawn, times the learned scale."""
    st = small_sim.stack
    rng = np.random.default_rng(0)
    patches = rng.standard_normal((6, 16, 16)).astype(np.float32) + 3.0
    sim = CryoGanSimulator(
        16, st.pixel_size_angstrom, ctf=st.ctf, noise="patches", patches=patches, noise_scale=0.5
    )
    lat = sim.sample_latent(5, torch.Generator().manual_seed(4))
    want = patches[lat.ctf_index] - patches[lat.ctf_index].mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(lat.noise.numpy(), want, atol=1e-6)
    diff = (sim.simulate(lat) - sim.noiseless(lat)).detach().numpy()
    np.testing.assert_allclose(diff, 0.5 * want, atol=1e-5)
    with pytest.raises(ValueError, match="patches must have shape"):
        CryoGanSimulator(16, 2.0, noise="patches", patches=patches[:, :8])


def test_positivity_warns_on_a_reference_with_negative_mass(caplog):
    from cryowedge.spa.cryogan.train import negative_mass_fraction

    assert negative_mass_fraction(np.array([1.0, 2.0, 0.0])) == 0.0
    assert negative_mass_fraction(np.array([1.0, -0.5, 3.0])) == pytest.approx(0.125)
    sim = simulate_spa("1a5t", box_size=16, n_particles=8, snr=1.0, ctf=False, seed=2)
    cfg = preset_config(
        "cpu-small",
        epochs=1,
        batch_size=4,
        n_discr=1,
        channels=4,
        align_rotations=20,
        fsc_every=0,
        half_sets=False,
    )
    zero_mean = sim.truth - sim.truth.mean()
    with caplog.at_level("WARNING", logger="cryowedge.spa.cryogan.train"):
        train_cryogan(sim.stack, cfg, truth=zero_mean)
    assert "positivity=False" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cryowedge.spa.cryogan.train"):
        train_cryogan(sim.stack, cfg, truth=np.clip(sim.truth, 0, None))
    assert "positivity" not in caplog.text
