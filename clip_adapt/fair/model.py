"""The FAIR model: a CLIP image encoder with trainable normalisation layers, the CDA, and the frozen class-name
classifier; the pseudo-labelling teacher pass and the student's fused logits (methods/FAIR.md, parts 3-9).

One training step (`FAIRModel.loss`): the weak view and its N crops (cut from the full-resolution image by the data
loader, crops.RandomSquareCrops) go through the encoder in ONE no-grad call
(teacher: zero-shot + LAS -> fused pseudo-labels and ambiguity weights), the strong view goes through it once with
gradient (student), then the weighted CE + fairness loss. That is N + 2 image-encoder passes and one backward.
"""
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import ConfigError
from ..norms import module_dtype, norm_parameters, tower_name
from ..optim import decay_groups
from .crops import check_crop_scale, crop_weights, encode_with_crops
from .las import las_scores
from .pseudo_labels import MARGIN_MODES, DistributionAlignment, PseudoLabels, fair_loss, pseudo_labels


class FAIRConfigError(ConfigError):
    """A TRAINER.FAIR value (or another key FAIR reads) is invalid; the message names the key and the value."""


@dataclass
class FAIRSettings:
    """The method's knobs (TRAINER.FAIR.*; defaults of FAIR.md, part 8)."""
    n_crops: int = 8
    crop_scale: tuple = (0.5, 0.9)
    topk_crops: int = 6
    tau_v: float = 1.0
    gamma: float = 0.5
    margin: str = "margin"
    fairness_weight: float = 1.0
    student_fusion: float = 0.5
    test_crops: bool = False
    dist_align: bool = False
    dist_align_momentum: float = 0.999
    ambiguity_ratio: float = 0.5
    teacher_ema: float = 0.0

    @classmethod
    def from_cfg(cls, fair_cfg):
        """From a yacs node TRAINER.FAIR (keys are the upper-case field names)."""
        return cls(**{f.name: getattr(fair_cfg, f.name.upper()) for f in fields(cls)
                      if f.name.upper() in fair_cfg})

    def validate(self):
        """FAIRConfigError naming TRAINER.FAIR.<KEY> for the first invalid value; returns self."""
        def bad(field, value, want):
            raise FAIRConfigError(f"TRAINER.FAIR.{field.upper()} must be {want}, got {value!r}")

        if not isinstance(self.n_crops, int) or self.n_crops < 1:
            bad("n_crops", self.n_crops, "an integer >= 1")
        if not isinstance(self.topk_crops, int) or not 1 <= self.topk_crops <= self.n_crops:
            bad("topk_crops", self.topk_crops, f"an integer in 1..N_CROPS ({self.n_crops})")
        try:
            check_crop_scale(self.crop_scale)
        except (TypeError, ValueError, IndexError):
            bad("crop_scale", self.crop_scale, "(a, b) with 0 < a <= b <= 1")
        if self.margin not in MARGIN_MODES:
            bad("margin", self.margin, f"one of {MARGIN_MODES}")
        for name in ("gamma", "student_fusion", "ambiguity_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, getattr(self, name), "in [0, 1]")
        for name in ("teacher_ema", "dist_align_momentum"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, getattr(self, name), "in [0, 1)")
        if not self.tau_v > 0:
            bad("tau_v", self.tau_v, "> 0")
        if not self.fairness_weight >= 0:
            bad("fairness_weight", self.fairness_weight, ">= 0")
        return self


def visual_norm_parameters(visual):
    """(name, parameter) of the affine parameters of every normalisation layer of the encoder: LayerNorm (ViT),
    BatchNorm (ResNet), and those of open_clip's towers (timm ViT/ConvNeXt, clip_adapt/norms.py). A tower without
    any is a FAIRConfigError naming it."""
    out = norm_parameters(visual)
    if not out:
        raise FAIRConfigError(f"FAIR: the image tower {tower_name(visual)} (MODEL.BACKBONE.NAME) has no "
                              f"normalisation layers to train")
    return out


@dataclass
class StepOutput:
    """What one training step computed (for logging; nothing here carries gradient)."""
    pseudo: PseudoLabels
    zs_logits: torch.Tensor
    las_logits: torch.Tensor
    crop_weights: torch.Tensor
    parts: dict


class FAIRModel(nn.Module):
    """visual: CLIP's image encoder (`clip_model.visual`); name_emb: C x D class-name text embeddings (the
    zero-shot classifier); cda: ClassDescriptionAnchors; logit_scale: s = exp(CLIP's logit_scale)."""

    def __init__(self, visual, name_emb, cda, logit_scale, settings=None, train_classifier=False):
        super().__init__()
        self.visual = visual
        self.cda = cda
        self.settings = settings or FAIRSettings()
        name_emb = F.normalize(name_emb.float(), dim=-1)
        if train_classifier:
            self.classifier = nn.Parameter(name_emb.clone())
        else:
            self.register_buffer("classifier", name_emb.clone())
        self.register_buffer("logit_scale", torch.as_tensor(float(logit_scale)))
        self.settings.validate()
        self.dist_align = (DistributionAlignment(cda.num_classes, self.settings.dist_align_momentum)
                           if self.settings.dist_align else None)
        self.teacher_state = None  # EMA of the trainable tensors (TEACHER_EMA > 0), made at the first teacher pass
        self.freeze()

    # ---- what trains ----------------------------------------------------------------------------------------
    def freeze(self):
        """Only the visual norm layers' affine parameters and the CDA (and the classifier, if a parameter) train.

        Under fp16 the trainable norm parameters are kept in fp32 (CLIP's LayerNorm computes in fp32 anyway), so
        the optimiser never updates half-precision weights.
        """
        self.visual.requires_grad_(False)
        for _, p in visual_norm_parameters(self.visual):
            p.data = p.data.float()
            p.requires_grad_(True)
        self.cda.requires_grad_(True)

    def train(self, mode=True):
        """The encoder always runs in eval mode: BatchNorm statistics (ResNet) stay frozen."""
        super().train(mode)
        self.visual.eval()
        return self

    def param_groups(self, weight_decay):
        """AdamW groups (part 8): decay on weight matrices/anchors (ndim >= 2), none on norm parameters/biases."""
        return decay_groups(self, weight_decay)

    # ---- scores ---------------------------------------------------------------------------------------------
    @property
    def dtype(self):
        return module_dtype(self.visual)

    def encode(self, images):
        """Normalised image features (float32) from the encoder in its weight dtype."""
        return F.normalize(self.visual(images.to(self.dtype)).float(), dim=-1)

    def zs_logits(self, global_feats):
        """s * cos(g, t_c^name): the global-feature (class-name) classifier."""
        return self.logit_scale * global_feats @ F.normalize(self.classifier, dim=-1).t()

    def las_logits(self, crop_feats, weights):
        """s * LAS(x, c) (part 4)."""
        return self.logit_scale * las_scores(crop_feats, weights, self.cda.prototypes())

    def _local_features(self, images, crops=None):
        """(g, crop features, crop weights); crops: B x N x C x H x W (from the loader) or None, when the global
        view is the only 'crop' (weight 1)."""
        s = self.settings
        if crops is not None:
            g, f = encode_with_crops(self.encode, images, crops.to(images.device))
            w, _ = crop_weights(f, g, s.topk_crops, s.tau_v)
            return g, f, w
        g = self.encode(images)
        return g, g.unsqueeze(1), torch.ones(g.shape[0], 1, device=g.device, dtype=g.dtype)

    # ---- teacher weights ----------------------------------------------------------------------------------------
    def _trainable(self):
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def _teacher_state(self):
        """The EMA tensors, started from the current (initial) weights the first time they are needed."""
        if self.teacher_state is None:
            self.teacher_state = {n: p.detach().clone() for n, p in self._trainable()}
        return self.teacher_state

    @torch.no_grad()
    def update_teacher(self):
        """After an optimiser step: EMA <- m * EMA + (1 - m) * current, m = TEACHER_EMA (no-op when 0)."""
        m = self.settings.teacher_ema
        if m <= 0:
            return
        state = self._teacher_state()
        for n, p in self._trainable():
            state[n].mul_(m).add_(p.detach(), alpha=1 - m)

    @contextmanager
    def _teacher_weights(self):
        """Run the pseudo-labelling pass with the EMA weights (TEACHER_EMA > 0) or the current ones (0: the
        spec's reading, where teacher and student share the weights). The student's weights are put back after."""
        if self.settings.teacher_ema <= 0:
            yield
            return
        state = self._teacher_state()
        saved = {}
        try:
            for n, p in self._trainable():
                saved[n] = p.data
                p.data = state[n].to(p.device, p.dtype)
            yield
        finally:
            for n, p in self._trainable():
                if n in saved:
                    p.data = saved[n]

    @torch.no_grad()
    def teacher(self, weak, crops, update_alignment=True, gather=None):
        """Pseudo-labels from the weak view and its crops (B x N x C x H x W; parts 3-6); no gradient. The weights
        are the current ones, or their EMA with TRAINER.FAIR.TEACHER_EMA > 0 (a mean-teacher, as in MUST on which
        FAIR builds). gather: with data-parallel shards, clip_adapt.distributed.gather_batch -- the pseudo-labels
        (and the distribution alignment's statistics) are then those of the global batch, the same on every rank."""
        s = self.settings
        gather = gather or (lambda t: t)
        with self._teacher_weights():
            g, f, w = self._local_features(weak, crops)
            zs, las = gather(self.zs_logits(g)), gather(self.las_logits(f, w))
            w = gather(w)
        align = None
        if self.dist_align is not None:
            align = (lambda p: self.dist_align(p, update=update_alignment))
        pl = pseudo_labels(zs, las, s.gamma, s.margin, align)
        return pl, zs, las, w

    def student_logits(self, images, crops=None):
        """(1 - b) * zero-shot logits + b * LAS logits of the student (parts 7 and 9), b = STUDENT_FUSION; LAS over
        `crops` when given, else over the view's global feature."""
        b = self.settings.student_fusion
        g, f, w = self._local_features(images, crops)
        return (1 - b) * self.zs_logits(g) + b * self.las_logits(f, w)

    def forward(self, images, crops=None):
        """Inference (part 9): the student's fused score on the given (centre-crop) view, plus its crops if given
        (TRAINER.FAIR.TEST_CROPS: the loader cuts them from the full-resolution image)."""
        return self.student_logits(images, crops)

    def loss(self, weak, strong, crops, gather=None):
        """One training step's loss (parts 5-7): teacher on the weak view and its crops, student on the strong
        view. gather: with data-parallel shards, clip_adapt.distributed.gather_batch -- the loss is then the global
        batch's (its weighted mean and its fairness term's batch-mean prediction span every shard)."""
        pl, zs, las, w = self.teacher(weak, crops, gather=gather)
        logits = (gather or (lambda t: t))(self.student_logits(strong))
        loss, parts = fair_loss(logits, pl.labels, pl.weights, self.settings.fairness_weight)
        return loss, StepOutput(pseudo=pl, zs_logits=zs, las_logits=las, crop_weights=w, parts=parts)

    # ---- diagnostics ----------------------------------------------------------------------------------------
    def step_statistics(self, out):
        """Per-batch numbers to log: mean weight, fraction ambiguous (p2 / p1 >= AMBIGUITY_RATIO), LAS vs
        zero-shot top-1 agreement on the weak view."""
        top2 = out.pseudo.probs.topk(min(2, out.pseudo.probs.shape[1]), dim=1).values
        ratio = top2[:, -1] / top2[:, 0].clamp_min(1e-12) if top2.shape[1] > 1 else torch.zeros(len(top2))
        return {
            "weight": out.pseudo.weights.mean().item(),
            "ambiguous": (ratio >= self.settings.ambiguity_ratio).float().mean().item(),
            "agree": (out.zs_logits.argmax(1) == out.las_logits.argmax(1)).float().mean().item(),
        }
