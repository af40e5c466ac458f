"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of few-shot CLIP features.

Keys K (N x D): the L2-normalised few-shot train features (mean over augmentation passes, clip_adapt.dac.cache_keys);
values L (N x C): their one-hot labels (clip_adapt.dac.cache_values). With affinity A = exp(-beta (1 - f K^T)), the
logits of a normalised image feature f are s f W^T + alpha A L (paper, Eq. 6; s = exp(CLIP's logit_scale), 100 for
OpenAI's checkpoints). Tip-Adapter-F makes K a parameter, initialised from the features and trained with
cross-entropy (paper, Sec. 3.3). The cache arithmetic itself is DAC's (clip_adapt/dac/cache_model.py).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_adapt.baselines import BaselineConfigError
from clip_adapt.dac.cache_model import cache_logits


def tip_grid(scale, steps, name="grid"):
    """Tip-Adapter's search list: 0.1 + i (scale - 0.1) / steps for i = 0 .. steps-1 (Tip-Adapter's utils.search_hp;
    the top value `scale` itself is not in the list)."""
    try:
        scale, steps = float(scale), int(steps)
    except (TypeError, ValueError):
        raise BaselineConfigError(f"{name} must be a number and a step count, got {scale!r}, {steps!r}") from None
    if steps < 1 or scale < 0.1:
        raise BaselineConfigError(f"{name}: the scale must be >= 0.1 and the steps >= 1, got scale {scale}, "
                                  f"steps {steps}")
    return torch.tensor([0.1 + i * (scale - 0.1) / steps for i in range(steps)], dtype=torch.float64)


def tip_logits(features, text, logit_scale, keys, values, alpha, beta):
    """s f W^T + alpha exp(-beta (1 - f K^T)) L (Eq. 6); alpha = 0 gives zero-shot CLIP's logits s f W^T exactly."""
    logits = logit_scale * features @ text.t()
    if alpha == 0:
        return logits
    return logits + alpha * cache_logits(features, keys, values, beta)


class TipAdapterHead(nn.Module):
    """The cache model on frozen features: text classifier W (fixed), keys K, values L.

    train_keys: K is an nn.Parameter (Tip-Adapter-F) instead of a buffer (Tip-Adapter). W and the logit scale are
    rebuilt from the class names each run (non-persistent); K and L are saved with the model.
    """

    def __init__(self, text, logit_scale, keys, values, train_keys=False):
        super().__init__()
        self.register_buffer("text", text.detach().float().clone(), persistent=False)
        self.register_buffer("logit_scale", torch.as_tensor(float(logit_scale)), persistent=False)
        keys = keys.detach().float().clone()
        if train_keys:
            self.keys = nn.Parameter(keys)
        else:
            self.register_buffer("keys", keys)
        self.register_buffer("values", values.detach().float().clone())

    @torch.no_grad()
    def reset_keys(self, keys):
        """Set K to `keys` (N x D): Tip-Adapter-F's initialisation from the cache features."""
        if keys.shape != self.keys.shape:
            raise ValueError(f"reset_keys: expected keys of shape {tuple(self.keys.shape)}, got {tuple(keys.shape)}")
        self.keys.copy_(keys)

    def text_logits(self, features):
        return self.logit_scale * features @ self.text.t()

    def forward(self, features, alpha, beta):
        return tip_logits(features, self.text, self.logit_scale, self.keys, self.values, alpha, beta)

    def loss(self, features, labels, alpha, beta):
        """Cross-entropy of the Tip-Adapter logits at the initial alpha/beta (Tip-Adapter-F's training loss)."""
        return F.cross_entropy(self(features, alpha, beta), labels)
