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
    affinity = query @ keys.t()
    return torch.exp(-beta * (1.0 - affinity)) @ values
