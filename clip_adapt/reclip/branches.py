"""ReCLIP's two branches over a frozen CLIP (methods/RECLIP.md, parts 3, 4 and 6).

ReCLIP-V trains the visual encoder's LayerNorms (and the BatchNorm affine parameters of a ResNet tower); its
classifier is a fixed C x D matrix set by the trainer (text embeddings, then class centroids).
ReCLIP-T trains the text encoder's LayerNorms and ln_final; its classifier is the class embeddings of one
template, recomputed with gradient at every step; its image features come from the frozen visual encoder.
Each branch owns a CLIP copy and keeps it in eval mode: BatchNorm running statistics stay frozen (only the
affine parameters train), as in the official code, whatever mode the trainer sets.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..prompts import fill
from ..norms import norm_parameters, tower_name
from ..text import class_embeddings, tokenize


def visual_norm_parameters(clip_model):
    """(name, parameter) of every normalisation layer in the visual encoder: LayerNorm and BatchNorm2d in
    OpenAI CLIP, and those of open_clip's towers (clip_adapt/norms.py)."""
    return norm_parameters(clip_model.visual, "visual")


def text_norm_parameters(clip_model):
    """(name, parameter) of every LayerNorm of the text transformer, and of ln_final (an open_clip model: of
    every normalisation layer of its text tower, `OpenCLIPModel.text_towers`)."""
    if hasattr(clip_model, "text_towers"):
        return [item for prefix, tower in clip_model.text_towers() for item in norm_parameters(tower, prefix)]
    out = []
    for mname, module in clip_model.transformer.named_modules():
        if isinstance(module, nn.LayerNorm):
            for pname, p in module.named_parameters(recurse=False):
                out.append((f"transformer.{mname}.{pname}", p))
    out += [(f"ln_final.{n}", p) for n, p in clip_model.ln_final.named_parameters()]
    return out


def _freeze_except(clip_model, named_params, what="CLIP model"):
    if not named_params:
        raise ValueError(f"ReCLIP: the {what} has no normalisation parameters to train (MODEL.BACKBONE.NAME)")
    clip_model.requires_grad_(False)
    for _, p in named_params:
        p.requires_grad_(True)


class _Branch(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.clip = clip_model
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().float().clone(),
                             persistent=False)

    def train(self, mode=True):
        super().train(mode)
        self.clip.eval()  # frozen BatchNorm statistics; CLIP has no dropout
        return self

    def encode_images(self, images):
        """Normalised float32 image features (gradient flows where the visual encoder trains)."""
        return F.normalize(self.clip.encode_image(images.to(self.clip.dtype)).float(), dim=-1)


class ReCLIPVisual(_Branch):
    """ReCLIP-V: logits = s * f(x) . w_c with trainable visual norms and a fixed classifier w (C x D)."""

    def __init__(self, clip_model, text_embeddings):
        super().__init__(clip_model)
        _freeze_except(self.clip, visual_norm_parameters(self.clip), f"image tower {tower_name(self.clip.visual)}")
        self.register_buffer("classifier", F.normalize(text_embeddings.detach().float(), dim=-1).clone())

    def set_classifier(self, weights):
        self.classifier.copy_(F.normalize(weights.detach().float(), dim=-1))

    def forward(self, images):
        feats = self.encode_images(images)
        return self.logit_scale * feats @ self.classifier.t()


class ReCLIPText(_Branch):
    """ReCLIP-T: logits = s * f0(x) . t_c, with f0 the frozen visual encoder and t_c the class embedding of
    one template from a text encoder whose norms train (RECLIP.md, part 4)."""

    def __init__(self, clip_model, classnames, template, anchor_templates):
        super().__init__(clip_model)
        _freeze_except(self.clip, text_norm_parameters(self.clip), "text encoder")
        self.classnames = list(classnames)
        self.anchor_templates = list(anchor_templates)
        prompts = [fill([template], c)[0] for c in self.classnames]
        self.register_buffer("tokens", tokenize(self.clip, prompts), persistent=False)

    def class_embeddings(self):
        """C x D normalised embeddings of the single-template prompts, with gradient."""
        return F.normalize(self.clip.encode_text(self.tokens).float(), dim=-1)

    @torch.no_grad()
    def anchor_embeddings(self):
        """C x D template-ensemble embeddings from the current text encoder: T's anchors and projection."""
        return class_embeddings(self.clip, self.classnames, self.anchor_templates).to(self.tokens.device)

    @torch.no_grad()
    def encode_frozen_images(self, images):
        return self.encode_images(images)

    def logits(self, image_features, text_embeddings=None):
        text = self.class_embeddings() if text_embeddings is None else text_embeddings
        return self.logit_scale * image_features.to(text.device).float() @ text.t()

    def forward(self, images):
        return self.logits(self.encode_frozen_images(images))
