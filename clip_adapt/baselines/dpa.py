"""DPA, Dual Prototypes Alignment (Ali et al., WACV 2025; docs/BASELINES.md): pure torch.

Two sets of class prototypes: text prototypes T (C x D, the classifier, initialised from the class text embeddings
and trained) and image prototypes P (C x D, the normalised mean feature of the images pseudo-labelled c; the text
embedding of c for a class no image is labelled with), fixed during an epoch and recomputed from a memory of the
epoch's weak-view features and pseudo-labels at its end. Per batch (DPA's engine_self_training.py):
- text probabilities p_t = softmax(s f_w T^T) of the weak view, distribution-aligned by the mean of the last H
  batch means of p_t (p_t / mean, renormalised), image probabilities p_i = softmax(s f_w P^T);
- fused p = a p_i + (1 - a) p_t_aligned, pseudo-label y = argmax p, weight w = (p_t[y] / max p_t) (p_i[y] / max p_i);
- loss = mean_b w CE(s f_s T^T, y) + reg * (-mean_c log mean_b softmax(s f_s T^T)) + align * CE(w_a P T^T, I):
  the last term aligns each text prototype with its class's image prototype (class c is the target of row c).
"""
import torch
import torch.nn.functional as F

from clip_adapt.fair.pseudo_labels import fairness_term


@torch.no_grad()
def image_prototypes(features, labels, text):
    """P (C x D): per class the L2-normalised mean of the `features` whose pseudo-label is c; the normalised text
    prototype of c for a class with no such feature. Labels < 0 (memory rows never filled) are ignored."""
    text = text.detach().float()
    c, d = text.shape
    keep = labels >= 0
    feats, labels = features[keep].float().to(text.device), labels[keep].long().to(text.device)
    sums = torch.zeros(c, d, device=text.device).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=c)
    means = F.normalize(sums / counts.clamp_min(1).unsqueeze(1).float(), dim=-1)
    return torch.where((counts > 0).unsqueeze(1), means, F.normalize(text, dim=-1))


class BatchMeanHistory:
    """The last `size` batch means of p_t (DPA keeps 32): the prior its distribution alignment divides by."""

    def __init__(self, size=32):
        if size < 1:
            raise ValueError(f"BatchMeanHistory: size must be >= 1, got {size}")
        self.size, self.means = int(size), []

    def update(self, probs):
        self.means.append(probs.detach().float().mean(0))
        if len(self.means) > self.size:
            self.means.pop(0)

    def mean(self):
        return torch.stack(self.means).mean(0)

    def state_dict(self):
        return {"size": self.size, "means": torch.stack(self.means).cpu() if self.means else None}

    def load_state_dict(self, state):
        self.size = int(state["size"])
        self.means = [] if state["means"] is None else list(state["means"])


def confidence_weight(probs, labels):
    """p[y] / max_c p (1 for the arg-max class)."""
    return probs.gather(1, labels.unsqueeze(1)).squeeze(1) / (probs.max(dim=1).values + 1e-7)


@torch.no_grad()
def fused_pseudo_labels(text_logits, feats, prototypes, logit_scale, history, a):
    """(labels, weights, parts) for a batch of weak-view features (module docstring); updates `history` first."""
    p_text = F.softmax(text_logits.float(), dim=-1)
    history.update(p_text)
    aligned = p_text / history.mean().to(p_text.device)
    aligned = aligned / aligned.sum(dim=1, keepdim=True)
    p_image = F.softmax(logit_scale * feats.float() @ prototypes.t(), dim=-1)
    probs = a * p_image + (1.0 - a) * aligned
    labels = probs.argmax(dim=-1)
    weights = confidence_weight(p_text, labels) * confidence_weight(p_image, labels)
    return labels, weights, {"p_text": p_text, "p_text_aligned": aligned, "p_image": p_image, "probs": probs}


def prototype_alignment(prototypes, text_prototypes, scale):
    """CE(scale * P T^T, I): each normalised text prototype pulled towards its class's image prototype."""
    logits = scale * prototypes.detach() @ F.normalize(text_prototypes, dim=-1).t()
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def dpa_loss(strong_logits, labels, weights, prototypes, text_prototypes, align_scale=100.0, fairness_weight=1.0,
             align_weight=1.0):
    """(loss, parts): weighted pseudo-label CE + fairness (FAIR's term: DPA's minus the constant log C) +
    prototype alignment."""
    ce = (weights * F.cross_entropy(strong_logits.float(), labels, reduction="none")).mean()
    fair = fairness_term(strong_logits)
    align = prototype_alignment(prototypes, text_prototypes, align_scale)
    loss = ce + fairness_weight * fair + align_weight * align
    return loss, {"ce": ce.detach(), "fair": fair.detach(), "align": align.detach()}
