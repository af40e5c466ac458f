"""Data-parallel core (clip_adapt/distributed.py) with torch.distributed's gloo backend and 2 processes on the CPU:
the global batches do not depend on the number of processes, the gathered global-batch loss with summed gradients
is the 1-process gradient, sharded evaluation equals the 1-process outputs exactly. End-to-end runs of every
trainer under torchrun: tests/test_distributed_dassl.py."""
import pickle
import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from clip_adapt import distributed
from clip_adapt.distributed import GlobalBatchSampler, SeededItems, item_seed


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, fn, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # plain pickle bytes: tensors travel by value, not as shared memory that dies with this process
        queue.put((rank, pickle.dumps(fn())))
    finally:
        dist.destroy_process_group()


def run_in_processes(fn, world=2):
    """fn() in `world` gloo processes; {rank: its return value}."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, fn, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out = {rank: pickle.loads(data) for rank, data in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return out


# ---- samplers (no process group needed) -------------------------------------------------------------------------
@pytest.mark.parametrize("n,batch,world,drop_last", [(23, 8, 2, True), (23, 8, 4, False), (24, 6, 3, True),
                                                     (10, 4, 2, False), (7, 8, 2, False)])
def test_the_shards_of_every_step_are_the_one_process_batch_in_order(n, batch, world, drop_last):
    one = GlobalBatchSampler(n, batch, seed=5, drop_last=drop_last, world=1, rank_=0)
    shards = [GlobalBatchSampler(n, batch, seed=5, drop_last=drop_last, world=world, rank_=r) for r in range(world)]
    for epoch in (0, 3):
        for s in [one] + shards:
            s.set_epoch(epoch)
        steps = list(one)
        per_rank = [list(s) for s in shards]
        assert all(len(p) == len(steps) == len(s) for p, s in zip(per_rank, shards))
        for i, batch_1 in enumerate(steps):
            assert sum((p[i] for p in per_rank), []) == batch_1  # contiguous shards in rank order
            sizes = [len(p[i]) for p in per_rank]
            assert max(sizes) - min(sizes) <= 1
        expected = n // batch if drop_last else -(-n // batch)
        assert len(steps) == expected and all(len(b) == batch for b in steps[:n // batch])
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first  # re-seeded per epoch
    one.set_epoch(0)
    assert list(one) == first  # ... and reproducible


def test_fewer_items_than_processes_is_an_error_naming_both():
    with pytest.raises(ValueError, match="3 items cannot be shared by 4 processes"):
        GlobalBatchSampler(3, 8, world=4, rank_=0)


def test_an_indivisible_global_batch_names_the_key_and_both_numbers():
    assert distributed.per_rank_batch(64, "DATALOADER.TRAIN_X.BATCH_SIZE", world=4) == 16
    with pytest.raises(ValueError) as e:
        distributed.per_rank_batch(30, "DATALOADER.TRAIN_X.BATCH_SIZE", world=4)
    assert "DATALOADER.TRAIN_X.BATCH_SIZE = 30" in str(e.value) and "4 processes" in str(e.value)


class _Noise(Dataset):
    def __len__(self):
        return 9

    def __getitem__(self, i):
        return {"x": torch.rand(3), "index": i}


def test_seeded_items_depend_on_seed_epoch_and_index_only():
    ds = SeededItems(_Noise(), seed=3)
    a = [ds[i]["x"] for i in range(9)]
    torch.manual_seed(0)  # another global RNG state, another order, workers: same items
    b = {int(batch["index"][j]): batch["x"][j] for batch in DataLoader(ds, batch_size=4, shuffle=True,
                                                                        num_workers=2) for j in range(len(batch["x"]))}
    assert all(torch.equal(a[i], b[i]) for i in range(9))
    ds.epoch = 1
    assert not torch.equal(ds[0]["x"], a[0])
    assert item_seed(3, 0, 1) != item_seed(3, 0, 0) != item_seed(4, 0, 0)


def test_one_process_helpers_return_their_input():
    x = torch.randn(4, 3, requires_grad=True)
    assert distributed.gather_batch(x) is x and distributed.all_reduce_sum(x) is x
    loader = DataLoader(_Noise(), batch_size=4)
    assert distributed.shard_batches(loader) is loader
    outs, labels = [torch.ones(2)], [torch.zeros(2)]
    assert distributed.gather_batches(outs, labels) == (outs, labels)


# ---- collectives in 2 gloo processes ------------------------------------------------------------------------------
def _global_loss(model, x, y):
    """A loss with batch-level terms (as FAIR's: weighted mean and a batch-mean prediction)."""
    logits = model(x)
    w = torch.sigmoid(x[:, 0])
    ce = (w * F.cross_entropy(logits, y, reduction="none")).sum() / w.sum()
    p_bar = logits.softmax(-1).mean(0)
    return ce - torch.log(p_bar).mean()


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(5, 3)


def _sharded_gradient():
    x, y = _data()
    model = _model()
    mine = distributed.shard(torch.arange(12))
    loss = _global_loss_gathered(model, x[mine], y[mine])
    loss.backward()
    distributed.all_reduce_grads(model.parameters())
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def _global_loss_gathered(model, x, y):
    gather = distributed.gather_batch
    logits = gather(model(x))
    x, y = gather(x), gather(y)
    w = torch.sigmoid(x[:, 0])
    ce = (w * F.cross_entropy(logits, y, reduction="none")).sum() / w.sum()
    p_bar = logits.softmax(-1).mean(0)
    return ce - torch.log(p_bar).mean()


def test_the_gathered_loss_with_summed_gradients_is_the_one_process_step():
    x, y = _data()
    model = _model()
    loss = _global_loss(model, x, y)
    loss.backward()
    expected = [p.grad for p in model.parameters()]
    out = run_in_processes(_sharded_gradient)
    for rank, (value, grads) in out.items():
        assert value == pytest.approx(loss.item(), abs=1e-6)  # every rank computes the global loss
        for g, e in zip(grads, expected):
            assert torch.allclose(g, e, atol=1e-6), (rank, (g - e).abs().max())


def _grads_some_ranks_lack():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    if distributed.rank() == 1:
        (a * 3).sum().backward()  # only rank 1 has a gradient for `a`; nobody has one for `b`
    distributed.all_reduce_grads([a, b])
    return a.grad, b.grad


def test_a_gradient_missing_on_some_ranks_is_summed_and_one_missing_everywhere_stays_none():
    for a_grad, b_grad in run_in_processes(_grads_some_ranks_lack).values():
        assert torch.equal(a_grad, torch.full((2,), 3.0)) and b_grad is None


class _Images(Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"img": torch.randn(5, generator=g), "label": i % 3, "index": i}


def _evaluate(sharded):
    model = _model()
    loader = DataLoader(_Images(), batch_size=4)
    loader = distributed.shard_batches(loader) if sharded else loader
    outs, labels = [], []
    with torch.no_grad():
        for batch in loader:
            outs.append(model(batch["img"]))
            labels.append(batch["label"])
    return distributed.gather_batches(outs, labels)


def test_sharded_evaluation_equals_the_one_process_outputs_exactly():
    outs, labels = _evaluate(sharded=False)
    for rank, (o, l) in run_in_processes(partial(_evaluate, True)).items():
        assert len(o) == len(outs) == 6
        assert all(torch.equal(a, b) for a, b in zip(o, outs)), rank
        assert all(torch.equal(a, b) for a, b in zip(l, labels)), rank


def test_three_processes_shard_an_uneven_evaluation_exactly():
    outs, _ = _evaluate(sharded=False)
    for o, _ in run_in_processes(partial(_evaluate, True), world=3).values():
        assert torch.equal(torch.cat(o), torch.cat(outs))
