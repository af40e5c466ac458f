"""Pseudo-labels, the ambiguity-aware weight and the weighted self-training loss (methods/FAIR.md, parts 5-7)."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MARGIN_MODES = ("none", "margin", "ratio")


@dataclass
class PseudoLabels:
    """What the weak view yields (no gradient): fused probabilities, labels, weights and their parts."""
    probs: torch.Tensor  # B x C fused p (after distribution alignment, if on)
    labels: torch.Tensor  # B, argmax p
    weights: torch.Tensor  # B, in [0, 1]
    probs_zs: torch.Tensor  # B x C softmax(s * zero-shot cosines)
    probs_las: torch.Tensor  # B x C softmax(s * LAS)


def fuse(zs_logits, las_logits, gamma):
    """p = gamma * softmax(zero-shot logits) + (1 - gamma) * softmax(LAS logits) (part 5; logits carry s)."""
    p_zs = zs_logits.float().softmax(-1)
    p_las = las_logits.float().softmax(-1)
    return gamma * p_zs + (1.0 - gamma) * p_las, p_zs, p_las


class DistributionAlignment:
    """DPA-style alignment (part 5, optional): p / running mean of batch-mean p, renormalised.

    The running mean starts uniform and is updated AFTER aligning each batch: m <- mu m + (1 - mu) mean_b p.
    """

    def __init__(self, num_classes, momentum=0.999):
        self.momentum = float(momentum)
        self.mean = torch.full((num_classes,), 1.0 / num_classes)

    def __call__(self, probs, update=True):
        mean = self.mean.to(probs.device)
        aligned = probs / mean.clamp_min(1e-12)
        aligned = aligned / aligned.sum(-1, keepdim=True)
        if update:
            self.mean = (self.momentum * mean + (1 - self.momentum) * probs.mean(0)).detach()
        return aligned

    def state_dict(self):
        return {"mean": self.mean.detach().cpu(), "momentum": self.momentum}

    def load_state_dict(self, state):
        self.mean = state["mean"].clone().float()
        self.momentum = float(state.get("momentum", self.momentum))


def margin_factor(probs, mode="margin"):
    """m in [0, 1] from the top-1 / top-2 of p: none -> 1, margin -> p1 - p2, ratio -> 1 - p2 / p1 (part 6)."""
    if mode not in MARGIN_MODES:
        raise ValueError(f"TRAINER.FAIR.MARGIN must be one of {MARGIN_MODES}, got {mode!r}")
    if mode == "none" or probs.shape[-1] < 2:
        return torch.ones(probs.shape[0], device=probs.device, dtype=probs.dtype)
    top2 = probs.topk(2, dim=-1).values
    if mode == "margin":
        return (top2[:, 0] - top2[:, 1]).clamp(0, 1)
    return (1 - top2[:, 1] / top2[:, 0].clamp_min(1e-12)).clamp(0, 1)


def ambiguity_weight(p_zs, p_las, probs, labels, mode="margin"):
    """w = (p_zs[y]/max p_zs) * (p_las[y]/max p_las) * m(p) in [0, 1] (part 6).

    High when both scores put y at (or near) their top and y clearly beats the runner-up; a sample whose two
    best classes tie gets m = 0.
    """
    y = labels.unsqueeze(1)
    agree_zs = p_zs.gather(1, y).squeeze(1) / p_zs.max(1).values.clamp_min(1e-12)
    agree_las = p_las.gather(1, y).squeeze(1) / p_las.max(1).values.clamp_min(1e-12)
    return (agree_zs * agree_las * margin_factor(probs, mode)).clamp(0, 1)


def pseudo_labels(zs_logits, las_logits, gamma, mode="margin", dist_align=None):
    """Parts 5-6 in one call: fuse, optionally align, argmax, weight. No gradient flows."""
    with torch.no_grad():
        probs, p_zs, p_las = fuse(zs_logits, las_logits, gamma)
        if dist_align is not None:
            probs = dist_align(probs)
        labels = probs.argmax(-1)
        weights = ambiguity_weight(p_zs, p_las, probs, labels, mode)
    return PseudoLabels(probs=probs, labels=labels, weights=weights, probs_zs=p_zs, probs_las=p_las)


def fairness_term(logits):
    """-mean_c log p_bar_c - log C = KL(uniform || p_bar) >= 0, p_bar the batch-mean prediction (part 7).

    Subtracting the constant log C changes no gradient and makes the term 0 at a balanced batch.
    """
    p_bar = logits.float().softmax(-1).mean(0)
    return -torch.log(p_bar.clamp_min(1e-12)).mean() - math.log(p_bar.numel())


def fair_loss(student_logits, labels, weights, fairness_weight=1.0, eps=1e-8):
    """sum_b w_b CE(student_b, y_b) / sum_b w_b + lambda * fairness term (part 7). Returns (loss, parts)."""
    ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
    weights = weights.to(ce.dtype)
    weighted_ce = (weights * ce).sum() / weights.sum().clamp_min(eps)
    fair = fairness_term(student_logits)
    loss = weighted_ce + fairness_weight * fair
    return loss, {"ce": weighted_ce.detach(), "fair": fair.detach()}
