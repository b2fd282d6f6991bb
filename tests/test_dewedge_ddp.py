"""Data-parallel fitting: two CPU processes on gloo (spawned here) against one process.

After the steps (one of them after an in-memory wedge update that rank 0 makes and
broadcasts) the weights are identical across the ranks, and the losses and weights match a
single-process fit whose batch is the global batch (2 × the per-rank batch).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from cryowedge.config.dewedge import DewedgeConfig

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _data():
    rng = np.random.default_rng(11)
    shape = (16, 24, 20)
    gt = rng.normal(size=shape)
    a = (gt + 0.5 * rng.normal(size=shape)).astype(np.float32)
    b = (gt + 0.5 * rng.normal(size=shape)).astype(np.float32)
    return a, b


def _config(batch_size: int) -> DewedgeConfig:
    return DewedgeConfig.model_validate(
        {
            "shared": {"subtomo_size": 16, "chans": 2, "depth": 2, "device": "cpu", "seed": 4},
            "fit": {
                "epochs": 2,
                "subtomos_per_epoch": 4,
                "batch_size": batch_size,
                "val_fraction": 0.0,
                "update_wedge_every": 1,
                "checkpoint_every": 1,
                "mixed_precision": "off",
                "lr": 1e-3,
            },
        }
    )


def _worker(rank: int, world: int, init_file: str, out_dir: str, result_dir: str) -> None:
    torch.set_num_threads(1)
    from cryowedge.dewedge import ddp
    from cryowedge.dewedge.fit import fit

    ddp.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout_s=120
    )
    try:
        a, b = _data()
        result = fit([(a, b)], [-55, 60], _config(batch_size=2), output_dir=out_dir)
        torch.save(
            {"state": result.model.state_dict(), "losses": [h["loss"] for h in result.history]},
            f"{result_dir}/rank{rank}.pt",
        )
    finally:
        ddp.shutdown()


def test_two_gloo_ranks_match_each_other_and_one_process(tmp_path):
    from cryowedge.dewedge.fit import fit

    world = 2
    mp.spawn(
        _worker,
        args=(world, str(tmp_path / "init"), str(tmp_path / "ddp"), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    assert r0["losses"] == r1["losses"]
    # only rank 0 wrote checkpoints, and they load
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").exists()

    torch.set_num_threads(1)
    a, b = _data()
    single = fit([(a, b)], [-55, 60], _config(batch_size=4), output_dir=tmp_path / "single")
    assert [h["loss"] for h in single.history] == pytest.approx(r0["losses"], rel=1e-4)
    ref = single.model.state_dict()
    for key in ref:
        diff = float((ref[key] - r0["state"][key]).abs().max())
        assert diff <= 1e-4 * max(1.0, float(ref[key].abs().max())), (key, diff)
    # the weights moved (the comparison is not between two untouched initialisations)
    from cryowedge.dewedge.fit import build_model

    torch.manual_seed(4)
    init = build_model(_config(4)).state_dict()
    assert float((init["final.weight"] - ref["final.weight"]).abs().max()) > 1e-4
