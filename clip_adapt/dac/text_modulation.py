"""DAC-T, inter-modal alignment (methods/DAC.md, part 2): a trainable modulation of the precomputed class text
embeddings W (C x D, frozen)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ("residual", "scale_shift")


class TextModulation(nn.Module):
    """W' = norm(W + gamma * dW) (`residual`, dW: C x D, zero at init: a per-class residual), or
    W' = norm(W * (1 + a) + b) (`scale_shift`, a and b: D-vectors shared by all classes, zero at init).

    The shared scale-and-shift is our choice where the spec is silent on the shapes of a and b (docs/DAC.md); it
    has D-sized parameters, so it also applies unchanged to classes absent from training.
    """

    def __init__(self, text_embeddings, mode="residual", gamma=1.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"TRAINER.DAC.TEXT_MOD must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.gamma = float(gamma)
        self.register_buffer("base", text_embeddings.detach().float().clone())
        c, d = self.base.shape
        if mode == "residual":
            self.delta = nn.Parameter(torch.zeros(c, d))
        else:
            self.scale = nn.Parameter(torch.zeros(d))
            self.shift = nn.Parameter(torch.zeros(d))

    @property
    def per_class(self):
        """Whether the parameters have one row per class (then they must be remapped for other class sets)."""
        return self.mode == "residual"

    def forward(self):
        if self.mode == "residual":
            w = self.base + self.gamma * self.delta
        else:
            w = self.base * (1.0 + self.scale) + self.shift
        return F.normalize(w, dim=-1)
