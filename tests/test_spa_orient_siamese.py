"""The Siamese distance network of spa.orient: projections, training, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.spa.orient import EmbeddingOracle, quaternion_to_matrix, uniform_quaternions
from cryowedge.spa.orient.data import prepare_density, project_density
from cryowedge.spa.orient.siamese import (
    SiameseConfig,
    embed_images,
    load_distance_network,
    predict_distances,
    resolve_device,
    train_distance_network,
)
from cryowedge.spa.projector import SpaProjector


@pytest.fixture(scope="module")
def sets():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = prepare_density("1a5t", box_size=16)
    train = project_density(model, uniform_quaternions(192, 0, half=True))
    val = project_density(model, uniform_quaternions(64, 1, half=True))
    return model, train, val


def _tiny(**kw):
    base = dict(channels=(8, 16), embedding_dim=8, hidden=32, epochs=6, steps_per_epoch=8,
                batch_images=32, lr=3e-3, val_pairs=500, device="cpu")
    base.update(kw)
    return SiameseConfig(**base)


def test_projections_follow_the_quaternions(sets):
    model, train, _ = sets
    # the images are the projector's at R(q): recompute three of them independently
    rot = quaternion_to_matrix(train.quaternions[:3])
    ref = SpaProjector(16, rot, blob=model.blob, dtype=torch.float64).forward(
        torch.as_tensor(model.coefficients)).numpy()
    assert np.allclose(train.images[:3], ref, atol=1e-4 * np.abs(ref).max())
    # and they differ between orientations
    assert np.abs(train.images[0] - train.images[1]).max() > 0.05 * np.abs(ref).max()


def test_tiny_training_reduces_the_loss(sets):
    _, train, val = sets
    res = train_distance_network(train, val, _tiny())
    # 48 steps of a tiny net: the losses fall (from ~2 and ~4 rad² to ~1 rad²); learning d_q
    # well takes ~1,000 steps at 32² (docs/results.md, "Orientation recovery")
    assert res.train_loss[-1] < 0.7 * res.train_loss[0]
    assert res.val_loss[-1] < 0.5 * res.val_loss[0]
    d = predict_distances(res, val.images[:32], val.images[32:64])
    e = embed_images(res, val.images)
    assert np.allclose(d, np.linalg.norm(e[:32] - e[32:64], axis=1), atol=1e-5)
    oracle = EmbeddingOracle(embed_images(res, val.images))
    assert oracle.n == len(val)
    assert float(oracle(torch.tensor([0]), torch.tensor([0]))[0]) == 0.0


def test_checkpoint_and_resume(sets, tmp_path):
    _, train, val = sets
    ckpt = tmp_path / "net.pt"
    first = train_distance_network(train, val, _tiny(epochs=2), checkpoint=ckpt)
    loaded = load_distance_network(ckpt)
    x = val.images[:4]
    assert np.allclose(embed_images(first, x), embed_images(loaded, x), atol=1e-5)
    more = train_distance_network(train, val, _tiny(epochs=3), checkpoint=ckpt, resume=True)
    assert len(more.train_loss) == 3
    assert np.allclose(more.train_loss[:2], first.train_loss, rtol=1e-6)
    assert load_distance_network(ckpt).train_loss.shape == (3,)
    with pytest.raises(ValueError, match="architecture"):
        train_distance_network(train, val, _tiny(epochs=3, embedding_dim=4), checkpoint=ckpt,
                               resume=True)


def test_bad_input(sets, tmp_path):
    _, train, _ = sets
    with pytest.raises(ValueError, match="batch_images"):
        train_distance_network(train.subset(slice(0, 8)), None, _tiny(batch_images=16))
    with pytest.raises(ValueError, match="batch_images"):
        SiameseConfig(batch_images=1)
    with pytest.raises(FileNotFoundError):
        load_distance_network(tmp_path / "missing.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")
