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


LOSS_SCALES = ("mean", "official")
CENTROID_RULES = ("images", "nodes")
TEXT_TEMPLATE_RULES = ("first", "single")
# The official code's choices (github.com/michiganleon/ReCLIP_WACV, reclip.py and models.py), as TRAINER.RECLIP keys.
OFFICIAL_RECIPE = {"TEMPLATES": "clip", "TEXT_TEMPLATE": "first", "LOSS_SCALE": "official", "CENTROIDS": "nodes"}
# This project's variant of the training math (docs/RECLIP.md): mean loss for ReCLIP-V, image-only centroids.
OURS_RECIPE = {"LOSS_SCALE": "mean", "CENTROIDS": "images"}


def recipe_name(settings):
    """"official" when every OFFICIAL_RECIPE key has its official value, "ours" when the training math is ours
    (OURS_RECIPE; any template set), else "mixed". `settings`: a mapping with those keys (cfg.TRAINER.RECLIP)."""
    if all(settings[k] == v for k, v in OFFICIAL_RECIPE.items()):
        return "official"
    if all(settings[k] == v for k, v in OURS_RECIPE.items()):
        return "ours"
    return "mixed"


def agreement_cross_entropy(logits, pseudo_labels, mask, loss_scale="mean", batch_size=None):
    """Cross-entropy against `pseudo_labels` on the samples where `mask` holds (RECLIP.md, part 5).

    loss_scale "mean": the mean over the agreed samples, sum_i m_i CE_i / sum_i m_i (both branches of the official
    code's ReCLIP-T; both branches here by default).
    loss_scale "official": the official code's ReCLIP-V loss (reclip.py: `torch.mean(CE * mask) / sum(mask)`),
    sum_i m_i CE_i / (B * sum_i m_i) with B = `batch_size`, the number of samples in the batch (agreeing or not;
    default: logits.shape[0]). It is the mean divided by B a second time: under SGD it is the mean trained with
    lr / B while the weight decay term keeps its size (a B times stronger decay relative to the loss).
    Samples outside the mask are not part of the graph of the loss, so they contribute exactly zero gradient.
    Returns a zero that still depends on `logits` when no sample agrees (the caller skips that step).
    """
    if logits.shape[0] != pseudo_labels.shape[0] or mask.shape[0] != logits.shape[0]:
        raise ValueError(f"batch sizes differ: logits {logits.shape[0]}, labels {pseudo_labels.shape[0]}, "
                         f"mask {mask.shape[0]}")
    if loss_scale not in LOSS_SCALES:
        raise ValueError(f"TRAINER.RECLIP.LOSS_SCALE must be one of {LOSS_SCALES}, got {loss_scale!r}")
    mask = mask.to(logits.device, torch.bool)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits[mask].float(), pseudo_labels.to(logits.device)[mask])
    if loss_scale == "official":
        loss = loss / (logits.shape[0] if batch_size is None else int(batch_size))
    return loss


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
                       chunk=4096, progress=False, centroids="images"):
    """Propagate labels for each branch in its own projection space; centroids of ReCLIP-V's assignment.

    feats_v: N x D features of ReCLIP-V's visual encoder; feats_t: N x D features of the frozen one.
    anchors_v: C x D ReCLIP-V's anchors (the frozen text embeddings); anchors_t: ReCLIP-T's current
    template-ensemble embeddings. Each projection comes from its branch's anchors (RECLIP.md, parts 1-4).
    A class no sample is assigned to keeps its text embedding as ReCLIP-V's classifier.
    centroids "images": each class's centroid averages the image features assigned to it (RECLIP.md, part 3).
    centroids "nodes": it averages every graph node assigned to it, the C anchor nodes (the unprojected
    anchors_v, labelled by their own propagated scores) included, as the official code does (models.py,
    perform_label_propagation with cluster_centriod=True).
    """
    if centroids not in CENTROID_RULES:
        raise ValueError(f"TRAINER.RECLIP.CENTROIDS must be one of {CENTROID_RULES}, got {centroids!r}")
    out, anchor_labels = {}, None
    for name, feats, anchors in (("v", feats_v, anchors_v), ("t", feats_t, anchors_t)):
        basis = projection_basis(anchors, rank).to(feats.device)
        result = label_propagation(project(feats, basis), project(anchors.to(feats.device), basis), k=k,
                                   alpha=alpha, cg_iters=cg_iters, chunk=chunk, progress=progress)
        out[name] = result.labels
        if name == "v":
            anchor_labels = result.anchor_scores.argmax(1)
    num_classes = anchors_v.shape[0]
    if centroids == "nodes":
        nodes = torch.cat([anchors_v.to(feats_v.device, feats_v.dtype), feats_v])
        centres = class_centroids(nodes, torch.cat([anchor_labels.to(out["v"].device), out["v"]]), num_classes,
                                  fallback=anchors_v)
    else:
        centres = class_centroids(feats_v, out["v"], num_classes, fallback=anchors_v)
    return PseudoLabelRound(labels_v=out["v"], labels_t=out["t"], centroids=centres)
