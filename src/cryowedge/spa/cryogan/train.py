"""CryoGAN training: WGAN-GP between the data and the physics simulator (thesis Alg. 7).

One :class:`CryoGan` is one GAN on one set of particle images. An iteration is

1. ``n_discr`` discriminator steps: a real batch (the next images of this epoch's random
   permutation), a simulated batch from the current volume (no gradient to the volume),
   ``α ~ U[0, 1]`` per image, the loss ``−(mean D(real) − mean D(sim)) + λ·GP`` on the
   interpolates (:func:`~cryowedge.spa.cryogan.discriminator.gradient_penalty`), the gradient
   norm clipped, an Adam step (the ascent of (6.10));
2. one volume step: a fresh simulated batch, ``L_c = −mean D(sim)`` (6.12) backpropagated
   through the simulator to the coefficients and the noise scale, per-coefficient gradient
   clipping, an Adam step, then the constraints (symmetry, support, positivity).

An **epoch** shows every real image of the set to the discriminator once
(``⌈P / (batch · n_discr)⌉`` iterations); the learning rates then decay by ``lr_decay``. The
clip values ramp linearly from ~0 to their maximum over the first ``clip_ramp_epochs``.
Images are normalised to zero mean and unit std before the discriminator (thesis Fig. 6.2).

:func:`train_cryogan` runs two independent GANs on the two half sets (their discriminators start
from the same weights, as in the thesis), measures the half-map FSC after every ``fsc_every``
epochs (map 2 aligned on map 1 first, :func:`~cryowedge.spa.cryogan.align.align_maps`), writes
checkpoints and resumes from them **exactly**: every random draw comes from one
``torch.Generator`` per GAN whose state is saved with the weights, the Adam moments and the
schedulers, so a resumed run continues as the uninterrupted one would (on the same device).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.spa_cryogan import CryoGanConfig
from cryowedge.metrics.fourier import fourier_shell_correlation
from cryowedge.metrics.report import FSC_RESOLUTION_RULE
from cryowedge.spa.cryogan.align import align_maps
from cryowedge.spa.cryogan.discriminator import (
    Discriminator,
    gaussian_blur,
    gradient_penalty,
    normalize_images,
)
from cryowedge.spa.cryogan.simulator import CryoGanSimulator, highpass_filter
from cryowedge.spa.particles import ParticleStack

__all__ = [
    "CHECKPOINT_NAME",
    "CryoGan",
    "CryoGanResult",
    "EpochRecord",
    "half_map_fsc",
    "negative_mass_fraction",
    "resolve_device",
    "train_cryogan",
]

logger = logging.getLogger(__name__)

#: File name of the checkpoint inside the output directory.
CHECKPOINT_NAME = "cryogan.ckpt.pt"

ProgressFn = Callable[[str, float], None]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; other names as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device name ({err}).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use 'cpu'.")
    return dev


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


class CryoGan:
    """One CryoGAN (simulator + discriminator + optimisers) on one set of images.

    Parameters
    ----------
    images : numpy.ndarray
        ``(P, n, n)`` real particle images.
    pixel_size_angstrom : float
        Pixel size (Å).
    config : CryoGanConfig
        Hyperparameters.
    ctf : CTFParams or None
        The images' CTF parameters (the simulator samples from this list); ``None``: no CTF.
    inverted_contrast : bool
        Sign of the CTF (:class:`~cryowedge.spa.particles.ParticleStack`).
    patches : numpy.ndarray, optional
        ``(K, n, n)`` background patches for ``config.noise == "patches"``.
    seed : int
        Seed of this GAN's random stream (batches, poses, shifts, CTFs, noise, α).
    discriminator_seed : int
        Seed of the discriminator's initial weights (the same for both half sets).
    device : torch.device, optional
        Default: ``resolve_device(config.device)``.
    """

    def __init__(
        self,
        images: np.ndarray,
        pixel_size_angstrom: float,
        config: CryoGanConfig,
        *,
        ctf: Any = None,
        inverted_contrast: bool = False,
        patches: np.ndarray | None = None,
        seed: int = 0,
        discriminator_seed: int = 0,
        device: torch.device | None = None,
    ) -> None:
        imgs = np.asarray(images, dtype=np.float32)
        if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
            raise ValueError(f"images must be a (P, n, n) stack, got shape {imgs.shape}.")
        if imgs.shape[0] < config.batch_size:
            raise ValueError(
                f"{imgs.shape[0]} images are fewer than batch_size = {config.batch_size}; "
                "lower --batch-size or give more particles."
            )
        self.config = config
        self.device = resolve_device(config.device) if device is None else torch.device(device)
        self.n = imgs.shape[1]
        self.real = torch.as_tensor(imgs)
        self.generator = torch.Generator().manual_seed(int(seed))
        # Initial noise scale: the data's mean per-image std (so that at c = 0 the simulated
        # images have the data's power), divided by the patches' std for patch noise.
        data_std = float(imgs.std(axis=(1, 2)).mean())
        scale = max(data_std, 1e-6)
        if config.noise == "patches" and patches is not None:
            scale /= max(float(np.asarray(patches).std()), 1e-12)
        self.simulator = CryoGanSimulator(
            self.n,
            pixel_size_angstrom,
            ctf=ctf,
            inverted_contrast=inverted_contrast,
            blob=config.blob,
            max_shift_px=0.0 if config.stage1_epochs > 0 else config.max_shift_px,
            noise=config.noise,
            patches=patches,
            noise_scale=scale,
            learn_signal_scale=config.learn_signal_scale,
            support_fraction=config.support_fraction,
            positivity=config.positivity,
            symmetry=config.symmetry,
            dtype=_dtype(config.dtype),
            device=self.device,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(discriminator_seed))
            self.discriminator = Discriminator(
                self.n, config.channels, config.n_blocks, config.hidden
            ).to(self.device)
        self.opt_d, self.sched_d = self._adam(self.discriminator, config.lr_discriminator)
        self.opt_g, self.sched_g = self._adam(self.simulator, config.lr_volume)
        self.epoch = 0
        self.iteration = 0
        self._perm: torch.Tensor | None = None
        self._cursor = 0
        self.last: dict[str, float] = {}

    def _adam(
        self, module: torch.nn.Module, lr: float
    ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.ExponentialLR]:
        """Adam on ``module``'s parameters with the config's β, ε and per-epoch decay."""
        c = self.config
        opt = torch.optim.Adam(module.parameters(), lr=lr, betas=(c.beta1, c.beta2), eps=c.adam_eps)
        return opt, torch.optim.lr_scheduler.ExponentialLR(opt, 1.0 - c.lr_decay)

    # ---------------------------------------------------------------- schedule
    @property
    def n_images(self) -> int:
        """Number of real images ``P``."""
        return int(self.real.shape[0])

    @property
    def iterations_per_epoch(self) -> int:
        """Volume steps per epoch, ``⌈P / (batch · n_discr)⌉``."""
        c = self.config
        return max(1, math.ceil(self.n_images / (c.batch_size * c.n_discr)))

    def clip_factor(self) -> float:
        """Ramp of the clip values: ``(iteration + 1) / (ramp epochs · iterations per epoch)``."""
        ramp = self.config.clip_ramp_epochs * self.iterations_per_epoch
        if ramp <= 0:
            return 1.0
        return min(1.0, (self.iteration + 1) / ramp)

    def floor_fractions(self) -> tuple[float, float]:
        """Radial clipping ``(centre, border)`` fractions now (:func:`radial_threshold`)."""
        c = self.config
        progress = self.iteration / (c.radial_floor_ramp_epochs * self.iterations_per_epoch)
        f = c.radial_floor_fraction
        return f * min(1.0, progress), f

    @property
    def blur_sigma_px(self) -> float:
        """Blur σ (pixels) of the critic's inputs in this epoch."""
        c = self.config
        return c.blur_sigma_px * (1.0 - c.blur_decay) ** self.epoch

    @property
    def in_stage2(self) -> bool:
        """Whether the two-stage schedule's second (high-pass) stage is running."""
        return 0 < self.config.stage1_epochs <= self.epoch

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(torch.float32)
        sigma = self.blur_sigma_px
        if sigma > 0:
            images = gaussian_blur(images, sigma)
        return normalize_images(images) if self.config.normalize_images else images

    def _real_batch(self) -> torch.Tensor:
        b = self.config.batch_size
        if self._perm is None or self._cursor + b > self._perm.numel():
            self._perm = torch.randperm(self.n_images, generator=self.generator)
            self._cursor = 0
        idx = self._perm[self._cursor : self._cursor + b]
        self._cursor += b
        return self.real[idx].to(self.device)

    # ---------------------------------------------------------------- steps
    def discriminator_step(self) -> dict[str, float]:
        """One critic update (ascent of (6.10)); returns the loss terms."""
        c = self.config
        real = self._prepare(self._real_batch())
        with torch.no_grad():
            fake = self._prepare(self.simulator(c.batch_size, self.generator))
        alpha = torch.rand(c.batch_size, generator=self.generator).to(self.device)
        with self._autocast():
            d_real = self.discriminator(real).float().mean()
            d_fake = self.discriminator(fake).float().mean()
            gp, _ = gradient_penalty(self.discriminator, real, fake, alpha)
        w = d_real - d_fake
        loss = -w + c.gp_lambda * gp.float()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            self.discriminator.parameters(), c.clip_discriminator * self.clip_factor()
        )
        self.opt_d.step()
        return {"wasserstein": float(w.detach()), "gp": float(gp.detach())}

    def volume_step(self) -> float:
        """One volume update (descent of (6.12)) followed by the constraints; returns ``L_c``."""
        c = self.config
        fake = self._prepare(self.simulator(c.batch_size, self.generator))
        with self._autocast():
            loss = -self.discriminator(fake).float().mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        f = self.clip_factor()
        sim = self.simulator
        vol = sim.volume
        if vol.grad is not None:
            vol.grad.clamp_(-c.clip_volume * f, c.clip_volume * f)
        for log_s in (sim.log_noise_scale, sim.log_signal_scale):
            if log_s is not None and log_s.grad is not None:
                log_s.grad.clamp_(-c.clip_noise_scale * f, c.clip_noise_scale * f)
        before = vol.detach().clone() if self.in_stage2 else None
        self.opt_g.step()
        if before is not None:
            # Stage 2 refines only the high frequencies: the update's low ones are dropped.
            with torch.no_grad():
                cutoff = 0.5 * c.stage2_highpass_fraction_nyquist
                vol.copy_(before + highpass_filter(vol.detach() - before, cutoff))
        sim.constrain_(*self.floor_fractions())
        return float(loss.detach())

    def train_iteration(self) -> dict[str, float]:
        """``n_discr`` critic steps and one volume step (Alg. 7); returns the last losses."""
        stats = {}
        for _ in range(self.config.n_discr):
            stats = self.discriminator_step()
        stats["loss_volume"] = self.volume_step()
        stats["noise_scale"] = float(self.simulator.noise_scale.detach())
        stats["signal_scale"] = float(self.simulator.signal_scale.detach())
        self.iteration += 1
        self.last = stats
        return stats

    def run_epoch(self, on_iteration: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """One epoch (a fresh permutation of the real images), then the learning-rate decay.

        At the start of epoch ``stage1_epochs`` (two-stage schedule) the volume's Adam state and
        learning rate restart and the shifts are switched on.
        """
        c = self.config
        if c.stage1_epochs > 0 and self.epoch == c.stage1_epochs:
            logger.info("CryoGAN stage 2 from epoch %d: shifts on, high-pass updates", self.epoch)
            self.opt_g, self.sched_g = self._adam(self.simulator, c.lr_volume)
        one_stage = c.stage1_epochs == 0
        self.simulator.max_shift_px = c.max_shift_px if one_stage or self.in_stage2 else 0.0
        self._perm = torch.randperm(self.n_images, generator=self.generator)
        self._cursor = 0
        n_it = self.iterations_per_epoch
        sums: dict[str, float] = {}
        for i in range(n_it):
            stats = self.train_iteration()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            if on_iteration is not None:
                on_iteration(i + 1, n_it)
        self.sched_d.step()
        self.sched_g.step()
        self.epoch += 1
        return {k: v / n_it for k, v in sums.items()}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (weights, optimisers, RNG, counters)."""
        return {
            "simulator": {
                k: v.detach().cpu().clone() for k, v in self.simulator.state_dict().items()
            },
            "discriminator": {
                k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()
            },
            "opt_d": self.opt_d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "perm": None if self._perm is None else self._perm.clone(),
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.simulator.load_state_dict(state["simulator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self._perm = state["perm"]
        self._cursor = int(state["cursor"])

    def voxel_map(self) -> np.ndarray:
        """``(n, n, n)`` float32 voxel map of the current volume."""
        return self.simulator.voxel_map()


# ---------------------------------------------------------------------------- half sets


@dataclass
class EpochRecord:
    """One row of the resolution-vs-epoch table.

    Attributes
    ----------
    epoch : int
        Epochs done.
    seconds : float
        Wall time of this epoch (both GANs; FSC excluded).
    wasserstein : float
        Mean critic estimate of the Wasserstein distance over the epoch (GAN 1).
    noise_scale : float
        Learned noise σ (GAN 1).
    resolution_angstrom : float
        Half-map FSC = 0.143 resolution (Å; ``nan`` when not measured, ``inf`` if below from
        the first shell).
    fraction_nyquist : float
        ``2·pixel / resolution`` (0 for ``inf``).
    align_correlation : float
        Correlation of the aligned half maps.
    truth_resolution_angstrom : float
        FSC = 0.5 resolution of the full map against the truth (``nan`` without truth).
    truth_correlation : float
        Correlation of the aligned full map with the truth (``nan`` without truth).
    """

    epoch: int
    seconds: float
    wasserstein: float
    noise_scale: float
    resolution_angstrom: float = math.nan
    fraction_nyquist: float = math.nan
    align_correlation: float = math.nan
    truth_resolution_angstrom: float = math.nan
    truth_correlation: float = math.nan


@dataclass
class CryoGanResult:
    """Result of :func:`train_cryogan`.

    Attributes
    ----------
    half_maps : tuple of numpy.ndarray
        ``(n, n, n)`` float32 voxel maps of the two GANs (the second aligned on the first); with
        ``half_sets=False`` both are the single GAN's map.
    full_map : numpy.ndarray
        ``(n, n, n)`` float32 mean of the two aligned half maps.
    pixel_size_angstrom : float
        Voxel size (Å).
    fsc_frequency, fsc : numpy.ndarray
        Final half-map FSC curve (cycles/px) and values (empty without half sets).
    history : list of EpochRecord
        The resolution-vs-epoch table.
    seconds_per_epoch : float
        Mean wall time of an epoch (both GANs).
    device : str
        Where it ran.
    """

    half_maps: tuple[np.ndarray, np.ndarray]
    full_map: np.ndarray
    pixel_size_angstrom: float
    fsc_frequency: np.ndarray
    fsc: np.ndarray
    history: list[EpochRecord] = field(default_factory=list)
    seconds_per_epoch: float = math.nan
    device: str = "cpu"

    @property
    def resolution_angstrom(self) -> float:
        """Final half-map FSC = 0.143 resolution (Å)."""
        return self.history[-1].resolution_angstrom if self.history else math.nan

    @property
    def fraction_nyquist(self) -> float:
        """Final resolution as a fraction of the Nyquist frequency."""
        return self.history[-1].fraction_nyquist if self.history else math.nan


def _fraction(res: float, px: float) -> float:
    if not math.isfinite(res):
        return 0.0 if res == math.inf else math.nan
    return 2.0 * px / res


def half_map_fsc(
    map1: np.ndarray,
    map2: np.ndarray,
    pixel_size_angstrom: float,
    *,
    n_rotations: int = 3000,
    seed: int = 0,
) -> tuple[np.ndarray, Any, float, float]:
    """Align ``map2`` on ``map1``, FSC them; returns (aligned map2, FSC, resolution Å, align cc)."""
    al = align_maps(
        map2,
        map1,
        n_rotations=n_rotations,
        seed=seed,
        refine_candidates=max(8, min(60, n_rotations // 10)),
    )
    fsc = fourier_shell_correlation(map1, al.aligned)
    res = fsc.resolution_angstrom(0.143, pixel_size_angstrom, rule=FSC_RESOLUTION_RULE)
    return al.aligned, fsc, res, al.correlation


def _truth_metrics(
    full: np.ndarray, truth: np.ndarray, px: float, n_rot: int
) -> tuple[float, float]:
    al = align_maps(full, truth, n_rotations=n_rot, refine_candidates=max(8, min(60, n_rot // 10)))
    fsc = fourier_shell_correlation(truth, al.aligned)
    return fsc.resolution_angstrom(0.5, px, rule=FSC_RESOLUTION_RULE), al.correlation


def negative_mass_fraction(volume: np.ndarray) -> float:
    """``Σ|v[v < 0]| / Σ v[v > 0]`` of a map (0 for a non-negative map, ``inf`` if all ≤ 0)."""
    v = np.asarray(volume, dtype=np.float64)
    pos = float(v[v > 0].sum())
    neg = float(-v[v < 0].sum())
    return neg / pos if pos > 0 else (math.inf if neg > 0 else 0.0)


def _check_stack(stack: ParticleStack, config: CryoGanConfig, patches: np.ndarray | None) -> None:
    if not isinstance(stack, ParticleStack):
        raise TypeError(f"stack must be a ParticleStack, got {type(stack).__name__}.")
    n = stack.image_size
    if n < 8:
        raise ValueError(f"images must be at least 8×8 pixels for the discriminator, got {n}.")
    if config.noise == "patches":
        if patches is None:
            raise ValueError(
                "noise='patches' needs background patches (a (K, n, n) MRCS stack); pass them or "
                "use noise='gaussian'."
            )
        p = np.asarray(patches)
        if p.ndim != 3 or p.shape[1:] != (n, n):
            raise ValueError(f"patches must have shape (K, {n}, {n}), got {p.shape}.")


def _split(stack: ParticleStack, config: CryoGanConfig) -> list[np.ndarray]:
    if not config.half_sets:
        return [np.arange(stack.n_particles)]
    if stack.half_sets is None:
        stack = stack.with_random_halves(config.seed)
    halves = [np.flatnonzero(stack.half_sets == h) for h in (1, 2)]
    for h, idx in enumerate(halves, 1):
        if idx.size < config.batch_size:
            raise ValueError(
                f"half set {h} holds {idx.size} particles, fewer than batch_size = "
                f"{config.batch_size}; give more particles or set half_sets=False."
            )
    return halves


def _patch_subset(patches: np.ndarray | None, idx: np.ndarray, n_total: int) -> np.ndarray | None:
    """One patch per particle (``K == P``): the half set's own; otherwise all patches."""
    if patches is None:
        return None
    p = np.asarray(patches, dtype=np.float32)
    return p[idx] if p.shape[0] == n_total else p


def train_cryogan(
    stack: ParticleStack,
    config: CryoGanConfig,
    *,
    out_dir: str | Path | None = None,
    truth: np.ndarray | None = None,
    patches: np.ndarray | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> CryoGanResult:
    """Train CryoGAN on a particle stack (two half-set GANs by default).

    Parameters
    ----------
    stack : ParticleStack
        ``P`` images ``(P, n, n)`` with their CTF parameters (or none); poses are not used. Its
        ``half_sets`` split the data (random halves, seeded, when absent).
    config : CryoGanConfig
        Hyperparameters (thesis defaults).
    out_dir : path, optional
        Where the checkpoint ``cryogan.ckpt.pt`` is written (every ``checkpoint_every`` epochs)
        and read on ``resume``.
    truth : numpy.ndarray, optional
        ``(n, n, n)`` ground truth (simulated data): adds the FSC-vs-truth columns.
    patches : numpy.ndarray, optional
        ``(K, n, n)`` background patches (``noise="patches"``); with ``K == P`` each half set
        uses its own particles' patches.
    resume : bool
        Continue from the checkpoint in ``out_dir`` (``ValueError`` if there is none or it was
        made with other settings).
    progress : callable, optional
        ``progress(step, fraction)``, step ``"cryogan k/n"`` over all iterations.
    on_epoch : callable, optional
        Called with each :class:`EpochRecord`.

    Returns
    -------
    CryoGanResult
    """
    _check_stack(stack, config, patches)
    if truth is not None and np.shape(truth) != (stack.image_size,) * 3:
        raise ValueError(
            f"truth must be ({stack.image_size},)*3 to match the images, got {np.shape(truth)}."
        )
    if truth is not None and config.positivity:
        neg = negative_mass_fraction(np.asarray(truth))
        if neg > 0.2:
            logger.warning(
                "the reference map's negative values hold %.0f %% of its positive mass: a "
                "volume kept >= 0 (positivity) cannot represent it; consider positivity=False "
                "(e.g. a map from EMDB simulated as is)",
                100 * neg,
            )
    device = resolve_device(config.device)
    px = stack.pixel_size_angstrom
    halves = _split(stack, config)
    gans = []
    for h, idx in enumerate(halves):
        gans.append(
            CryoGan(
                stack.images[idx],
                px,
                config,
                ctf=None if stack.ctf is None else stack.ctf.subset(idx),
                inverted_contrast=stack.inverted_contrast,
                patches=_patch_subset(patches, idx, stack.n_particles),
                seed=config.seed * 1000 + 17 * (h + 1),
                discriminator_seed=(
                    config.seed if config.same_discriminator_init else config.seed * 1000 + 101 + h
                ),
                device=device,
            )
        )
    history: list[EpochRecord] = []
    ckpt = None if out_dir is None else Path(out_dir) / CHECKPOINT_NAME
    signature = {
        "n_particles": stack.n_particles,
        "image_size": stack.image_size,
        "config": config.model_dump(exclude={"epochs", "device", "fsc_every", "checkpoint_every"}),
    }
    if resume:
        if ckpt is None or not ckpt.exists():
            raise ValueError(f"resume: no checkpoint {ckpt}; run without --resume first.")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["signature"] != signature:
            raise ValueError(
                f"resume: the checkpoint {ckpt} was made with other data or settings; start a new "
                "output directory or rerun with the same options."
            )
        for gan, s in zip(gans, state["gans"], strict=True):
            gan.load_state_dict(s)
        history = [EpochRecord(**r) for r in state["history"]]
        logger.info("resumed CryoGAN from %s at epoch %d", ckpt, gans[0].epoch)

    total = config.epochs * sum(g.iterations_per_epoch for g in gans)
    done = sum(g.iteration for g in gans)
    logger.info(
        "CryoGAN: %d GAN(s) on %s particles, %d³ at %.3g Å/px, %d epochs × %s iterations, %s",
        len(gans),
        [len(i) for i in halves],
        stack.image_size,
        px,
        config.epochs,
        [g.iterations_per_epoch for g in gans],
        device,
    )
    fsc_freq = np.zeros(0)
    fsc_vals = np.zeros(0)
    aligned2: np.ndarray | None = None
    start_epoch = gans[0].epoch
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        stats = []
        for gan in gans:

            def tick(i: int, n: int, _base: int = done) -> None:
                if progress is not None:
                    k = _base + i
                    progress(f"cryogan {k}/{total}", k / total)

            stats.append(gan.run_epoch(tick))
            done += gan.iterations_per_epoch
        seconds = time.perf_counter() - t0
        rec = EpochRecord(
            epoch + 1,
            seconds,
            stats[0].get("wasserstein", math.nan),
            stats[0].get("noise_scale", math.nan),
        )
        last = epoch + 1 == config.epochs
        measure = last or (config.fsc_every > 0 and (epoch + 1) % config.fsc_every == 0)
        if measure:
            m1 = gans[0].voxel_map()
            if len(gans) == 2:
                m2 = gans[1].voxel_map()
                aligned2, fsc, res, cc = half_map_fsc(
                    m1, m2, px, n_rotations=config.align_rotations, seed=config.seed
                )
                fsc_freq, fsc_vals = fsc.frequency_cycles_per_pixel, fsc.correlation
                rec.resolution_angstrom, rec.align_correlation = res, cc
                rec.fraction_nyquist = _fraction(res, px)
                full = 0.5 * (m1 + aligned2)
            else:
                full = m1
            if truth is not None:
                rec.truth_resolution_angstrom, rec.truth_correlation = _truth_metrics(
                    full, np.asarray(truth, np.float32), px, config.align_rotations
                )
        history.append(rec)
        logger.info(
            "epoch %d/%d: %.1f s, W %.3g, σ %.3g, half-map FSC 0.143 %.3g Å (%.3g Nyquist)%s",
            epoch + 1,
            config.epochs,
            seconds,
            rec.wasserstein,
            rec.noise_scale,
            rec.resolution_angstrom,
            rec.fraction_nyquist,
            ""
            if math.isnan(rec.truth_correlation)
            else f", vs truth cc {rec.truth_correlation:.3f}, "
            f"FSC 0.5 {rec.truth_resolution_angstrom:.3g} Å",
        )
        if on_epoch is not None:
            on_epoch(rec)
        if (
            ckpt is not None
            and config.checkpoint_every
            and ((epoch + 1) % config.checkpoint_every == 0 or last)
        ):
            _save_checkpoint(ckpt, gans, history, signature)

    m1 = gans[0].voxel_map()
    if len(gans) == 2:
        if aligned2 is None:  # resumed after the last epoch: measure once more
            aligned2, fsc, _, _ = half_map_fsc(
                m1, gans[1].voxel_map(), px, n_rotations=config.align_rotations, seed=config.seed
            )
            fsc_freq, fsc_vals = fsc.frequency_cycles_per_pixel, fsc.correlation
        halves_out = (m1, aligned2)
    else:
        halves_out = (m1, m1)
    full = 0.5 * (halves_out[0] + halves_out[1])
    times = [r.seconds for r in history if r.epoch > start_epoch] or [r.seconds for r in history]
    return CryoGanResult(
        half_maps=halves_out,
        full_map=full.astype(np.float32),
        pixel_size_angstrom=px,
        fsc_frequency=np.asarray(fsc_freq),
        fsc=np.asarray(fsc_vals),
        history=history,
        seconds_per_epoch=float(np.mean(times)) if times else math.nan,
        device=str(device),
    )


def _save_checkpoint(
    path: Path, gans: list[CryoGan], history: list[EpochRecord], signature: dict[str, Any]
) -> None:
    from dataclasses import asdict

    from cryowedge.io._atomic import atomic_write

    state = {
        "gans": [g.state_dict() for g in gans],
        "history": [asdict(r) for r in history],
        "signature": signature,
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    logger.info("checkpoint %s (epoch %d)", path, gans[0].epoch)
