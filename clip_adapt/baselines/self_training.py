"""Plain self-training of CLIP on unlabelled images (the UPL / POUF / MUST family; docs/BASELINES.md), pure torch.

A teacher classifies the weak view of an unlabelled image; its arg-max is a pseudo-label when the teacher's softmax
confidence reaches a threshold tau; the student is trained with cross-entropy on the strong view of the same image
against that pseudo-label (FixMatch's consistency form, Sohn et al., NeurIPS 2020, Eq. 4: the masked cross-entropy
averaged over the whole batch). Only the visual encoder's norm layers train (the selection is FAIR's,
clip_adapt.fair.model.visual_norm_parameters); the classifier is the zero-shot text embeddings.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_adapt.fair.model import visual_norm_parameters
from clip_adapt.optim import decay_groups


@torch.no_grad()
def thresholded_pseudo_labels(weak_logits, threshold):
    """(labels, mask, confidence): arg-max of softmax(weak logits), mask = confidence >= threshold (tau)."""
    probs = F.softmax(weak_logits.float(), dim=-1)
    confidence, labels = probs.max(dim=-1)
    return labels, (confidence >= threshold).float(), confidence


LOSS_MEANS = ("batch", "selected")


def self_training_loss(strong_logits, labels, mask, mean="batch"):
    """(1/n) sum_i mask_i CE(strong_logits_i, label_i): samples under the threshold contribute nothing (no
    gradient). mean "batch": n = the batch size B (FixMatch's unlabelled loss); "selected": n = the number of
    selected samples (MUST's loss; 0 when none is selected)."""
    if mean not in LOSS_MEANS:
        raise ValueError(f"self_training_loss: mean must be one of {LOSS_MEANS}, got {mean!r}")
    ce = F.cross_entropy(strong_logits.float(), labels, reduction="none")
    n = strong_logits.shape[0] if mean == "batch" else int(mask.sum().item())
    return (mask * ce).sum() / max(1, n)


@torch.no_grad()
def ema_update(teacher, student, momentum, names):
    """teacher_p <- m teacher_p + (1 - m) student_p for the parameters called `names` (the trained ones)."""
    src = dict(student.named_parameters())
    for name, p in teacher.named_parameters():
        if name in names:
            p.mul_(momentum).add_(src[name].detach().to(p.dtype), alpha=1.0 - momentum)


class NormTunedCLIP(nn.Module):
    """CLIP's image encoder with only its norm layers' affine parameters trainable, and a class classifier W
    (C x D text embeddings; a buffer, or a parameter with train_classifier). Logits: s * norm(visual(x)) W^T."""

    def __init__(self, visual, text, logit_scale, train_classifier=False):
        super().__init__()
        self.visual = visual
        text = F.normalize(text.detach().float(), dim=-1).clone()
        if train_classifier:
            self.classifier = nn.Parameter(text)
        else:
            self.register_buffer("classifier", text)
        self.register_buffer("logit_scale", torch.as_tensor(float(logit_scale)))
        self.visual.requires_grad_(False)
        for _, p in visual_norm_parameters(self.visual):
            p.data = p.data.float()  # fp16 encoders: the trained norm parameters stay fp32
            p.requires_grad_(True)

    def train(self, mode=True):
        """The encoder stays in eval mode: BatchNorm running statistics (ResNet) are not updated."""
        super().train(mode)
        self.visual.eval()
        return self

    def param_groups(self, weight_decay):
        """AdamW groups: weight decay on matrices (ndim >= 2, e.g. a trained classifier), none on norms."""
        return decay_groups(self, weight_decay)

    def encode(self, images):
        """Normalised image features (float32)."""
        return F.normalize(self.visual(images.to(self.visual.conv1.weight.dtype)).float(), dim=-1)

    def class_weights(self):
        return F.normalize(self.classifier, dim=-1)

    def logits(self, feats):
        return self.logit_scale * feats @ self.class_weights().t()

    def forward(self, images):
        return self.logits(self.encode(images))
