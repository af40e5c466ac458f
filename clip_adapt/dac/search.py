"""The alpha/beta search of the final logits (methods/DAC.md, part 3), on the val split only.

The API takes the val tensors explicitly: nothing of the test split can reach it.
"""
from dataclasses import dataclass

import torch

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


@dataclass(frozen=True)
class SearchResult:
    alpha: float
    beta: float
    val_accuracy: float  # percent


@torch.no_grad()
def search_alpha_beta(text_logits_val, query_val, keys, values, labels_val, alphas, betas):
    """The (alpha, beta) maximising val accuracy of text_logits + alpha * cache_logits(query, beta).

    text_logits_val: M x C; query_val: M x D adapted val features; keys/values: the cache model;
    labels_val: M val labels. Ties go to the first pair in (beta, alpha) grid order (smallest values).
    """
    if labels_val.numel() == 0:
        raise ValueError("search_alpha_beta: the val split is empty")
    best = None
    affinity = query_val @ keys.t()  # independent of beta: computed once
    for beta in betas.tolist():
        image = affinity_logits(affinity, values, beta)
        for alpha in alphas.tolist():
            acc = ((text_logits_val + alpha * image).argmax(1) == labels_val).float().mean().item() * 100.0
            if best is None or acc > best.val_accuracy:
                best = SearchResult(alpha=float(alpha), beta=float(beta), val_accuracy=acc)
    return best
