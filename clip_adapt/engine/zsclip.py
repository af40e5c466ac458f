"""Zero-shot CLIP baseline: class-prompt embeddings of a template set against image features.

TRAINER.ZSCLIP.TEMPLATES (clip_adapt/templates.py): `single` is CoOp's ZeroshotCLIP (one hand-crafted template per
dataset), `coop_ensemble` CoOp's ZeroshotCLIP2 (its 7 selected ImageNet templates plus that template, ImageNet
alone without it), `clip` CLIP's per-dataset prompt lists and class names, `ensemble` this project's variant.
The class embedding is the normalised mean of the normalised prompt embeddings (clip_adapt/text.py).
"""
import torch
from dassl.engine import TRAINER_REGISTRY

from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.prompts import get_prompt_set
from clip_adapt.templates import check_set
from clip_adapt.text import class_embeddings
from clip_adapt.zeroshot import encode_images, zero_shot_logits


@TRAINER_REGISTRY.register()
class ZSCLIP(CLIPAdaptTrainer):
    """Nothing is trained; run with --eval-only. TRAINER.ZSCLIP.TEMPLATES: single | coop_ensemble | clip | ensemble."""

    def check_cfg(self, cfg):
        check_set(cfg.TRAINER.ZSCLIP.TEMPLATES, "TRAINER.ZSCLIP.TEMPLATES")

    def global_batches(self, cfg):
        return {}  # nothing is trained: no training batch to split over processes

    def build_model(self):
        self.clip_model = self.build_clip()
        self.prompts = get_prompt_set(self.dataset_short, self.cfg.TRAINER.ZSCLIP.TEMPLATES, self.classnames)
        templates = self.prompts.templates
        print(f"Zero-shot prompts: {self.prompts.name} ({len(templates)} templates; {self.prompts.source}), "
              f"e.g. {templates[0]!r}")
        self.text_features = class_embeddings(self.clip_model, self.prompts.classnames, templates,
                                              cache=self.feature_cache, backbone_id=self.backbone_id)
        self.text_features = self.text_features.to(self.device)
        self.logit_scale = self.clip_model.logit_scale.exp().float()
        bias = getattr(self.clip_model, "logit_bias", None)  # SigLIP (open_clip): s * cos + b
        self.logit_bias = None if bias is None else bias.detach().float()

    @torch.no_grad()
    def model_inference(self, image):
        with self.autocast():
            feats = encode_images(self.clip_model, image)
        return zero_shot_logits(feats, self.text_features, self.logit_scale, self.logit_bias)

    def forward_backward(self, batch):
        raise RuntimeError("ZSCLIP trains nothing: run train.py with --eval-only")

    def write_results(self, **extra):
        """results.json, with the template set that built the classifier."""
        super().write_results(templates=self.cfg.TRAINER.ZSCLIP.TEMPLATES, **extra)
