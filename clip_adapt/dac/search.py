"""The alpha/beta search of the final logits (methods/DAC.md, part 3), on the val split only.

The API takes the val tensors explicitly: nothing of the test split can reach it.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cache_model import affinity_logits


def grid(spec, name="grid"):
    """(low, high, steps) -> a 1-D tensor of `steps` evenly spaced values (steps >= 1)."""
    try:
        low, high, steps = spec
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (low, high, steps), got {spec!r}") from None
    steps = int(steps)
    if steps < 1 or high < low:
        raise ValueError(f"{name} must have steps >= 1 and high >= low, got {spec!r}")
    return torch.linspace(float(low), float(high), steps, dtype=torch.float64)  # exact grid values in logs


TIE_RULE = "highest val accuracy; ties: lower val cross-entropy, then smaller alpha, then smaller beta"


@dataclass(frozen=True)
class SearchResult:
    alpha: float
    beta: float
    val_accuracy: float  # percent
    val_cross_entropy: float = float("nan")  # mean cross-entropy of the final logits on val (the first tie-break)


@torch.no_grad()
def search_alpha_beta(text_logits_val, query_val, keys, values, labels_val, alphas, betas):
    """The (alpha, beta) maximising val accuracy of text_logits + alpha * cache_logits(query, beta).

    text_logits_val: M x C; query_val: M x D adapted val features; keys/values: the cache model;
    labels_val: M val labels. Ties (equal numbers of correct val images) are broken by TIE_RULE: the lower mean
    val cross-entropy of the final logits, then the smaller alpha, then the smaller beta; the order of the grids
    never matters.
    """
    if labels_val.numel() == 0:
        raise ValueError("search_alpha_beta: the val split is empty")
    best, best_rank = None, None
    affinity = query_val @ keys.t()  # independent of beta: computed once
    for beta in betas.tolist():
        image = affinity_logits(affinity, values, beta)
        for alpha in alphas.tolist():
            logits = text_logits_val + alpha * image
            correct = int((logits.argmax(1) == labels_val).sum().item())
            if best_rank is not None and -correct > best_rank[0]:
                continue  # fewer correct than the best: no tie to break
            ce = F.cross_entropy(logits.double(), labels_val).item()
            rank = (-correct, ce, float(alpha), float(beta))
            if best_rank is None or rank < best_rank:
                best_rank = rank
                best = SearchResult(alpha=float(alpha), beta=float(beta),
                                    val_accuracy=correct * 100.0 / labels_val.numel(), val_cross_entropy=ce)
    return best
