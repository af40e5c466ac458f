"""Cross-modality self-training (methods/RECLIP.md, parts 5 and 7)."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .centroids import class_centroids
from .label_propagation import label_propagation
from .projection import project, projection_basis

MAX_AUTO_EPOCHS = 100
SAMPLES_PER_EPOCH_STEP = 5000


def auto_epochs(num_samples):
    """min(100, N / 5000 + 2) epochs (integer part), the official schedule (RECLIP.md, part 7)."""
    return int(min(MAX_AUTO_EPOCHS, num_samples / SAMPLES_PER_EPOCH_STEP + 2))


def agreement_mask(labels_v, labels_t):
    """Samples whose ReCLIP-V and ReCLIP-T pseudo-labels agree (RECLIP.md, part 5)."""
    return labels_v == labels_t


def agreement_cross_entropy(logits, pseudo_labels, mask):
    """Cross-entropy against `pseudo_labels`, averaged over the samples where `mask` holds.

    Samples outside the mask are not part of the graph of the loss, so they contribute exactly zero gradient.
    Both branches use this mean over agreed samples; the official code divides ReCLIP-V's masked sum by the
    batch size and then again by the number of agreed samples, which we do not copy (RECLIP.md, part 5).
    Returns a zero that still depends on `logits` when no sample agrees (the caller skips that step).
    """
    if logits.shape[0] != pseudo_labels.shape[0] or mask.shape[0] != logits.shape[0]:
        raise ValueError(f"batch sizes differ: logits {logits.shape[0]}, labels {pseudo_labels.shape[0]}, "
                         f"mask {mask.shape[0]}")
    mask = mask.to(logits.device, torch.bool)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask].float(), pseudo_labels.to(logits.device)[mask])


@dataclass
class PseudoLabelRound:
    """One epoch's pseudo-labels of both branches (RECLIP.md, part 5) and ReCLIP-V's new classifier."""
    labels_v: torch.Tensor  # N
    labels_t: torch.Tensor  # N
    centroids: torch.Tensor  # C x D, ReCLIP-V's classifier for the epoch

    @property
    def agree(self):
        return agreement_mask(self.labels_v, self.labels_t)


def pseudo_label_round(feats_v, feats_t, anchors_v, anchors_t, rank=-1, k=20, alpha=0.99, cg_iters=20,
                       chunk=4096, progress=False):
    """Propagate labels for each branch in its own projection space; centroids of ReCLIP-V's assignment.

    feats_v: N x D features of ReCLIP-V's visual encoder; feats_t: N x D features of the frozen one.
    anchors_v: C x D ReCLIP-V's anchors (the frozen text embeddings); anchors_t: ReCLIP-T's current
    template-ensemble embeddings. Each projection comes from its branch's anchors (RECLIP.md, parts 1-4).
    A class no sample is assigned to keeps its text embedding as ReCLIP-V's classifier.
    """
    out = {}
    for name, feats, anchors in (("v", feats_v, anchors_v), ("t", feats_t, anchors_t)):
        basis = projection_basis(anchors, rank).to(feats.device)
        result = label_propagation(project(feats, basis), project(anchors.to(feats.device), basis), k=k,
                                   alpha=alpha, cg_iters=cg_iters, chunk=chunk, progress=progress)
        out[name] = result.labels
    centroids = class_centroids(feats_v, out["v"], anchors_v.shape[0], fallback=anchors_v)
    return PseudoLabelRound(labels_v=out["v"], labels_t=out["t"], centroids=centroids)
