"""Batches of cached views for the supervised intra-modal contrastive loss (methods/DAC.md, parts 1 and 4).

The loss needs positives: an anchor whose batch holds no other sample of its class adds nothing. With one view per
image per epoch, a 1-shot batch holds no positive pair at all (the loss is 0 and the adapter never trains), and at
16 shots on 1,000 classes most anchors of a 256 batch have none. The `class_views` sampler (the default) builds every
batch from whole groups of images of a class, each image as V >= 2 distinct cached augmentation passes: two
augmented views of one image are a positive pair (Khosla et al., NeurIPS 2020, Sec. 3.2, multiviewed batch), so every
anchor has at least V - 1 positives at any K. `random` is the former sampler (shuffled views, EPOCH_VIEWS).

Rows index the pass-major view table of A x N cached features: row = a * N + i (pass a, image i).
"""
import torch

SAMPLERS = ("class_views", "random")
EPOCH_VIEWS = ("one", "all")


def check_sampler(sampler, views=2, n_passes=None, batch_size=None, epoch_views="one", images_per_class=0):
    """Errors naming the TRAINER.DAC key of a sampler setting that cannot work."""
    if sampler not in SAMPLERS:
        raise ValueError(f"TRAINER.DAC.SAMPLER must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "random":
        if epoch_views not in EPOCH_VIEWS:
            raise ValueError(f"TRAINER.DAC.EPOCH_VIEWS must be one of {EPOCH_VIEWS}, got {epoch_views!r}")
        return
    if views < 2:
        raise ValueError(f"TRAINER.DAC.VIEWS must be >= 2 (two views of an image are its positive pair), got {views}")
    if n_passes is not None and views > n_passes:
        raise ValueError(f"TRAINER.DAC.VIEWS ({views}) must be <= TRAINER.DAC.AUG_PASSES ({n_passes}): the views of "
                         f"an image are distinct cached passes (or use TRAINER.DAC.SAMPLER random)")
    if images_per_class < 0:
        raise ValueError(f"TRAINER.DAC.IMAGES_PER_CLASS must be >= 0 (0: all K images of a class), got {images_per_class}")
    if batch_size is not None and batch_size < views:
        raise ValueError(f"TRAINER.DAC.BATCH_SIZE ({batch_size}) must be >= TRAINER.DAC.VIEWS ({views})")


def class_view_batches(labels, n_passes, batch_size, views=2, images_per_class=4, generator=None):
    """One epoch of batches (LongTensors of view rows): every few-shot image once, as `views` distinct passes.

    Each class's images are shuffled and cut into groups of `images_per_class` (0: the whole class); the groups of
    all classes are shuffled and laid end to end, and this sequence is cut into B = ceil(N / floor(batch_size /
    views)) consecutive slices of equal size (+-1; so no batch is a small remainder; an image is never split across
    batches, a group may be); each image comes with `views` distinct passes drawn at random. A batch holds
    P classes x (up to) `images_per_class` images x `views` views (at most batch_size rows), and every anchor has
    a positive (its other views).
    """
    labels = torch.as_tensor(labels).cpu()
    n = labels.numel()
    check_sampler("class_views", views, n_passes, batch_size, images_per_class=images_per_class)
    # images grouped by class, in random order inside each class
    _, cls = torch.unique(labels, return_inverse=True)
    perm = torch.randperm(n, generator=generator)
    perm = perm[torch.argsort(cls[perm], stable=True)]
    cls_sorted = cls[perm]
    counts = torch.bincount(cls_sorted)
    rank = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[cls_sorted]  # position inside its class
    group = rank // images_per_class if images_per_class >= 1 else torch.zeros_like(rank)
    _, gid = torch.unique(cls_sorted * (n + 1) + group, return_inverse=True)  # one id per (class, group)
    group_key = torch.randperm(int(gid.max()) + 1 if n else 0, generator=generator)  # the groups' shuffled order
    images = perm[torch.argsort(group_key[gid] * (n + 1) + rank)]
    # `views` distinct passes per image: the first `views` of a random permutation of the A passes
    passes = torch.rand(n, n_passes, generator=generator).argsort(1)[:, :views]
    batches = []
    for img in images.tensor_split(num_class_view_batches(n, batch_size, views)):
        rows = passes[img] * n + img[:, None]  # (images, views)
        batches.append(rows.t().reshape(-1))  # view-major inside a batch
    return batches


def num_class_view_batches(n_images, batch_size, views=2):
    """B = ceil(N / floor(batch_size / views)) batches per epoch (class_views), the same in every epoch."""
    return max(1, -(-n_images // (batch_size // views)))


def epoch_length(n_images, n_passes, epoch_views="one", sampler="random", views=2):
    """Views seen in one epoch (DAC.md, part 4). random sampler: N ("one": each image once as one of its A views,
    the cached analogue of one augmented pass per epoch in Tip-Adapter-F) or A*N ("all"); class_views: V*N."""
    if sampler == "class_views":
        return n_images * views
    check_sampler("random", epoch_views=epoch_views)
    return n_images if epoch_views == "one" else n_images * n_passes


def flat_view_index(positions, n_images, n_passes, epoch_views="one", generator=None):
    """random sampler: rows of the A*N view table for positions of an epoch: "all" -> the positions themselves;
    "one" -> image i = position, with a pass a drawn uniformly at random per sample."""
    if epoch_views == "all" or n_passes == 1:
        return positions
    passes = torch.randint(n_passes, positions.shape, generator=generator)
    return passes.to(positions.device) * n_images + positions


def random_view_batches(num_samples, batch_size, generator=None):
    """random sampler: shuffled index batches over the positions of one epoch."""
    perm = torch.randperm(num_samples, generator=generator)
    return [perm[i:i + batch_size] for i in range(0, num_samples, batch_size)]


def epoch_batches(labels, n_passes, batch_size, sampler="class_views", views=2, images_per_class=4,
                  epoch_views="one", generator=None):
    """One epoch of view-row batches for either sampler (what `train_on_cache` and the Dassl trainer train on)."""
    n = len(labels)
    if sampler == "class_views":
        return class_view_batches(labels, n_passes, batch_size, views, images_per_class, generator)
    size = epoch_length(n, n_passes, epoch_views)
    return [flat_view_index(pos, n, n_passes, epoch_views, generator)
            for pos in random_view_batches(size, batch_size, generator)]


def anchors_with_a_positive(labels):
    """Fraction of the samples of a batch whose class occurs at least twice in it (a diagnostic of the sampler)."""
    labels = torch.as_tensor(labels)
    same = labels[:, None] == labels[None, :]
    return ((same.sum(1) - 1) > 0).float().mean().item() if labels.numel() else float("nan")
