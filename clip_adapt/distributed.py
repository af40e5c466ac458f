"""Data-parallel runs with torch.distributed (`torchrun`): the process group, rank helpers, the samplers and the
collectives the trainers' global steps use. Framework-free (no Dassl).

The rule that makes an N-process run follow the 1-process recipe (docs/DISTRIBUTED.md):
- the training batch of the config is the GLOBAL batch; `GlobalBatchSampler` draws the same global batches for any
  N (a permutation seeded by (SEED, epoch)) and gives rank r the r-th of N contiguous shards of each;
- each rank encodes its shard; `gather_batch` reassembles the global batch in rank order (the gradient flows
  through the rank's own shard only); the loss is the 1-process formula on that batch;
- `all_reduce_grads` sums the trainable gradients over ranks: the sum of every shard's contribution is the
  gradient of the global loss, so every rank takes the same optimiser step;
- evaluation is sharded by whole batches of the 1-process loader (`shard_batches`), so each batch is computed as
  in a 1-process run, and the outputs are gathered back into their order (`gather_batches`).
With one process every helper returns its input unchanged: a run without torchrun computes exactly what
`torchrun --nproc_per_node 1` computes.
"""
import contextlib
import os
import random

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


# ---- process group ----------------------------------------------------------------------------------------------
def launched():
    """Whether this process was started by torchrun (or another launcher setting RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_enabled():
    return dist.is_available() and dist.is_initialized()


def world_size():
    return dist.get_world_size() if is_enabled() else 1


def rank():
    return dist.get_rank() if is_enabled() else 0


def is_main():
    """Rank 0 (or no process group): the only process that writes logs, checkpoints, caches and results."""
    return rank() == 0


def local_rank():
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env(use_cuda):
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment): NCCL
    with one GPU per local rank when CUDA is used, gloo on CPU. A no-op without torchrun. Returns the backend."""
    if not launched() or is_enabled():
        return dist.get_backend() if is_enabled() else None
    if use_cuda and torch.cuda.is_available():
        n_gpus = torch.cuda.device_count()
        if local_rank() >= n_gpus:
            raise RuntimeError(f"local rank {local_rank()} has no GPU: this node has {n_gpus} (torchrun "
                               f"--nproc_per_node must not exceed the GPUs per node)")
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    return backend


def shutdown():
    if is_enabled():
        dist.destroy_process_group()


def barrier():
    if world_size() > 1:
        dist.barrier()


def _comm_device():
    """Tensors of a collective live on the current GPU under NCCL, on the CPU under gloo."""
    if is_enabled() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- batches ------------------------------------------------------------------------------------------------------
def per_rank_batch(global_batch, key, world=None):
    """The per-rank batch of a global batch `global_batch` (config key `key`); ValueError naming both numbers when
    it does not divide."""
    world = world_size() if world is None else world
    if global_batch % world:
        raise ValueError(f"{key} = {global_batch} is the global batch, which must divide evenly over the {world} "
                         f"processes (per-rank batch {global_batch} / {world} is not an integer); choose a batch "
                         f"that is a multiple of {world} or run on another number of processes")
    return global_batch // world


def shard(items, world=None, rank_=None):
    """The rank's contiguous shard of a global batch (a list or a 1-D tensor), shards in rank order; sizes differ
    by at most one when the batch does not divide (a final partial batch)."""
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    n = len(items)
    start, stop = (n * rank_) // world, (n * (rank_ + 1)) // world
    return items[start:stop]


class GlobalBatchSampler(Sampler):
    """Batch sampler of one rank. Each epoch, range(n) is permuted by a generator seeded with (seed, epoch) (kept in
    order with shuffle=False), cut into global batches of `batch_size` (a final partial one dropped with
    drop_last), and rank r yields the r-th contiguous shard of each. The global batches do not depend on the
    number of processes or on any other RNG, so an N-process run sees the 1-process batches and a resumed run
    the uninterrupted ones. `set_epoch` before each epoch (CLIPAdaptTrainer.run_epoch does)."""

    def __init__(self, n, batch_size, seed=0, shuffle=True, drop_last=True, world=None, rank_=None):
        self.n, self.batch_size, self.seed = int(n), int(batch_size), max(int(seed), 0)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.world = world_size() if world is None else world
        self.rank = rank() if rank_ is None else rank_
        self.epoch = 0
        if self.n < self.world:
            raise ValueError(f"{self.n} items cannot be shared by {self.world} processes (every process needs at "
                             f"least one item per step)")

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def global_batches(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2 ** 63)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        stop = self.n - self.n % self.batch_size if self.drop_last else self.n
        return [order[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __iter__(self):
        for batch in self.global_batches():
            yield shard(batch, self.world, self.rank)

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)


def item_seed(seed, index, epoch=0):
    """A 32-bit seed of item `index` at `epoch` under run seed `seed` (torch's CPU generator keeps 32 bits)."""
    return (max(int(seed), 0) * 1_000_003 + int(epoch) * 7_919 + int(index)) % 2 ** 32


@contextlib.contextmanager
def seeded_rng(seed):
    """torch's CPU RNG and Python's `random` seeded with `seed` inside the block, both restored after."""
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            yield
    finally:
        random.setstate(state)


class SeededItems(Dataset):
    """`dataset` whose item i is produced with the RNGs seeded by item_seed(seed, i, epoch): a random
    augmentation of an image depends on the run seed, the epoch and the image only -- not on the batch, the loader
    workers or the number of processes."""

    def __init__(self, dataset, seed, epoch=0):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        with seeded_rng(item_seed(self.seed, index, self.epoch)):
            return self.dataset[index]

    def __getattr__(self, name):  # transform, data_source, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def rebatch(loader, batches=None, dataset=None):
    """A DataLoader like `loader` (workers, collate, pinning) over `dataset` (default the same) yielding the index
    lists `batches` (default the loader's own batches)."""
    if batches is None:
        batches = list(loader.batch_sampler)
    return DataLoader(dataset if dataset is not None else loader.dataset, batch_sampler=batches,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)


def shard_batches(loader):
    """The 1-process loader's batches i with i % N == rank, as a loader (or list, for a list of batches): every
    batch is exactly a 1-process batch, so its outputs are too. Unchanged with one process."""
    world = world_size()
    if world == 1:
        return loader
    if isinstance(loader, list):
        return loader[rank()::world]
    return rebatch(loader, list(loader.batch_sampler)[rank()::world])


# ---- collectives ----------------------------------------------------------------------------------------------------
def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] (pickled; for small or CPU data)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_from_main(obj):
    """Rank 0's `obj` on every rank (tensors travel on the CPU; move them to the device after)."""
    if world_size() == 1:
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def all_gather_rows(t):
    """[t of rank 0, t of rank 1, ...] for tensors that agree in every dimension but the first (sizes may differ)."""
    world = world_size()
    if world == 1:
        return [t]
    dev = _comm_device()
    src = t.detach().to(dev)
    dtype = src.dtype
    if dtype == torch.bool:  # gloo has no bool collectives
        src = src.to(torch.uint8)
    sizes = torch.tensor([src.shape[0]], device=dev)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    all_sizes = [int(s.item()) for s in all_sizes]
    padded = torch.zeros((max(all_sizes),) + tuple(src.shape[1:]), dtype=src.dtype, device=dev)
    padded[:src.shape[0]] = src
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [p[:n].to(device=t.device, dtype=dtype) for p, n in zip(parts, all_sizes)]


def gather_batch(x):
    """The global batch from each rank's shard `x` (concatenated in rank order along dim 0). The gradient flows
    through this rank's own rows only; summed over ranks by all_reduce_grads it is the global batch's gradient.
    Returns `x` itself with one process."""
    if world_size() == 1:
        return x
    parts = all_gather_rows(x)
    parts[rank()] = x
    return torch.cat(parts)


def all_reduce_grads(params):
    """Sum the gradients of `params` over ranks (in place), one all-reduce per dtype. A parameter without a
    gradient on every rank keeps none (an optimiser then skips it, as in a 1-process step); one with a gradient on
    some rank gets the sum, zeros counted for the others. A no-op with one process."""
    if world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    dev = _comm_device()
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    dist.all_reduce(has)
    by_dtype = {}
    for i, p in enumerate(params):
        by_dtype.setdefault(p.dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        flat = torch.cat([(params[i].grad if params[i].grad is not None else torch.zeros_like(params[i]))
                          .detach().reshape(-1).to(dev) for i in idx])
        dist.all_reduce(flat)
        offset = 0
        for i in idx:
            p = params[i]
            n = p.numel()
            if has[i] > 0:
                p.grad = flat[offset:offset + n].view_as(p).to(p.device).clone()
            offset += n


def all_reduce_sum(t):
    """The sum of `t` over ranks (a new tensor; `t` itself with one process)."""
    if world_size() == 1:
        return t
    out = t.detach().clone().to(_comm_device())
    dist.all_reduce(out)
    return out.to(t.device)


def gather_batches(outputs, labels):
    """Evaluation outputs of the batches `shard_batches` gave this rank, back in the 1-process order: lists of
    (output, label) tensors of every batch, the same on every rank."""
    if world_size() == 1:
        return outputs, labels
    mine = [(o.detach().float().cpu(), l.detach().cpu()) for o, l in zip(outputs, labels)]
    per_rank = all_gather_objects(mine)
    world, total = world_size(), sum(len(p) for p in per_rank)
    ordered = [per_rank[i % world][i // world] for i in range(total)]
    return [o for o, _ in ordered], [l for _, l in ordered]
