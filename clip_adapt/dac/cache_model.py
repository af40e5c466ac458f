"""The few-shot cache model (methods/DAC.md, part 1; Tip-Adapter form, Zhang et al., ECCV 2022, Eq. 6)."""
import torch
import torch.nn.functional as F


def cache_keys(view_features, adapter=None):
    """Keys K (N x D): the mean over the A augmentation passes of g(f), re-normalised.

    view_features: A x N x D (pass, image, dim) frozen normalised features; adapter: g (None = identity).
    """
    if view_features.dim() != 3:
        raise ValueError(f"cache_keys: expected A x N x D view features, got shape {tuple(view_features.shape)}")
    feats = view_features if adapter is None else adapter(view_features)
    return F.normalize(feats.mean(0), dim=-1)


def cache_values(labels, num_classes):
    """Values L (N x C): one-hot labels of the few-shot images."""
    return F.one_hot(labels.long(), num_classes).float()


def cache_logits(query, keys, values, beta):
    """Image logits exp(-beta * (1 - q K^T)) L for adapted, normalised queries q (M x D)."""
    return affinity_logits(query @ keys.t(), values, beta)


def affinity_logits(affinity, values, beta):
    """exp(-beta * (1 - A)) L for a precomputed affinity A = q K^T (M x N): the val search reuses A for every beta."""
    return class_sum(torch.exp(-beta * (1.0 - affinity)), values)


def class_sum(weights, values):
    """weights @ values (M x N times N x C). When `values` is one-hot (the cache model's labels; all-zero rows
    allowed) this is a per-class sum of the weights, O(M N) instead of the matmul's O(M N C)."""
    labels = one_hot_labels(values)
    if labels is None:
        return weights @ values
    keep = labels >= 0
    if not keep.all():
        labels, weights = labels[keep], weights[:, keep]
    out = weights.new_zeros(weights.shape[0], values.shape[1])
    return out.index_add_(1, labels, weights)


def one_hot_labels(values):
    """Per row of a 0/1 matrix with at most one 1 per row: the column of the 1 (-1 for an all-zero row); None for
    any other matrix (e.g. soft labels)."""
    if not ((values == 0) | (values == 1)).all():
        return None
    counts = values.sum(1)
    if (counts > 1).any():
        return None
    labels = values.argmax(1)
    labels[counts == 0] = -1
    return labels
