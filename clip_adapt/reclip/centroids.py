"""ReCLIP-V's classifier: per-class centroids of the propagated labels (methods/RECLIP.md, part 3)."""
import torch
import torch.nn.functional as F


def class_centroids(features, labels, num_classes, fallback):
    """C x D normalised centroids: the mean of the (unprojected, normalised) features assigned to each class.

    A class that received no sample keeps `fallback[c]` (the text embedding, or the previous classifier).
    The caller chooses what `features` are: the image features only (RECLIP.md, part 3: "centroid of features
    that propagation assigned to it"), or every graph node with the anchors first, as the official code averages
    (self_training.pseudo_label_round, TRAINER.RECLIP.CENTROIDS).
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} features but {labels.shape[0]} labels")
    if fallback.shape != (num_classes, features.shape[1]):
        raise ValueError(f"fallback must be {num_classes} x {features.shape[1]}, got {tuple(fallback.shape)}")
    feats = F.normalize(features.float(), dim=-1)
    labels = labels.to(feats.device)
    sums = torch.zeros(num_classes, feats.shape[1], device=feats.device).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=num_classes)
    fallback = F.normalize(fallback.to(feats.device).float(), dim=-1)
    centroids = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None], fallback)
    return F.normalize(centroids, dim=-1)
