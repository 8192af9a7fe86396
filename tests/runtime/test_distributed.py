"""recalibrate_bn and check_buffers_synced across 2 real CPU processes (gloo backend)."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import modeguard

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 6), nn.BatchNorm1d(6))


def rank_data(rank):
    generator = torch.Generator().manual_seed(100 + rank)
    sizes = [32, 7] if rank == 0 else [16, 16, 3]  # uneven across ranks too
    return [torch.randn(n, 4, generator=generator) * (1 + rank) + 2 * rank for n in sizes]


def worker(rank, world, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net = model()
        if rank == 1:
            with torch.no_grad():
                net[1].running_mean.add_(1.0)  # ranks disagree before recalibration
        before = modeguard.check_buffers_synced(net)
        report = modeguard.recalibrate_bn(net, rank_data(rank), progress=False)
        after = modeguard.check_buffers_synced(net)
        results[rank] = {
            "before": before,
            "after": after,
            "state": {k: v.clone() for k, v in net.state_dict().items()},
            "world": report.distributed_world_size,
        }
    finally:
        dist.destroy_process_group()


def test_two_ranks_end_with_the_statistics_of_the_union(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    r0, r1 = results[0], results[1]
    assert r0["before"] == r1["before"] == ["1.running_mean"]
    assert r0["after"] == r1["after"] == []
    assert r0["world"] == 2
    assert all(torch.equal(v, r1["state"][k]) for k, v in r0["state"].items())
    single = model()
    modeguard.recalibrate_bn(single, rank_data(0) + rank_data(1), progress=False)
    for key, value in single.state_dict().items():
        if "running" in key:
            assert torch.allclose(value, r0["state"][key], rtol=1e-5, atol=1e-6), key
    assert int(r0["state"]["1.num_batches_tracked"]) == 5


def test_check_buffers_synced_needs_a_process_group():
    with pytest.raises(modeguard.InputError, match="process group"):
        modeguard.check_buffers_synced(model())
