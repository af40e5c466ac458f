"""DAC-V, intra-modal alignment (methods/DAC.md, part 1): an identity-initialised linear adapter on frozen image
features, trained with a supervised intra-modal contrastive loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class IntraModalAdapter(nn.Module):
    """g(f) = norm(L f) (default) or norm(f + s * L f) (`residual=True`, s a learnable scalar).

    L is D x D without bias, initialised to the identity, so g(f) = f for a normalised f before training
    (DAC.md, part 1). In the residual form s starts at 1: with s = 0 the gradients of both s and L would be
    zero at the identity (the update f + s f only rescales f, which the normalisation removes).
    """

    def __init__(self, dim, residual=False):
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
        self.residual = bool(residual)
        self.scale = nn.Parameter(torch.ones(())) if self.residual else None

    def forward(self, features):
        out = self.linear(features)
        if self.residual:
            out = features + self.scale * out
        return F.normalize(out, dim=-1)


def supervised_contrastive_loss(features, labels, temperature=0.07):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, Eq. 2, L_out) on normalised `features`.

    Positives of an anchor are the other samples of its class (other views of the same image included),
    negatives all remaining samples; anchors without a positive in the batch are left out of the mean.
    Returns 0 (with a graph) when no anchor has a positive.
    """
    n = features.shape[0]
    sim = features @ features.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return features.sum() * 0.0
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()


def mean_intra_class_cosine(features, labels):
    """Mean cosine similarity of distinct pairs of the same class (a diagnostic of cluster tightness)."""
    f = F.normalize(features, dim=-1)
    sim = f @ f.t()
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool, device=f.device)
    return sim[same].mean() if same.any() else sim.new_tensor(float("nan"))
