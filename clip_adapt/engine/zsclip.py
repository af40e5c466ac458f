"""Zero-shot CLIP baseline: class-prompt embeddings (one template or an ensemble) against image features."""
import torch
from dassl.engine import TRAINER_REGISTRY

from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.prompts import get_templates
from clip_adapt.text import class_embeddings
from clip_adapt.zeroshot import encode_images, zero_shot_logits


@TRAINER_REGISTRY.register()
class ZSCLIP(CLIPAdaptTrainer):
    """Nothing is trained; run with --eval-only. TRAINER.ZSCLIP.TEMPLATES: single | ensemble."""

    def build_model(self):
        self.clip_model = self.build_clip()
        templates = get_templates(self.dataset_short, self.cfg.TRAINER.ZSCLIP.TEMPLATES)
        print(f"Zero-shot prompts ({len(templates)} templates), e.g. {templates[0]!r}")
        self.text_features = class_embeddings(self.clip_model, self.classnames, templates,
                                              cache=self.feature_cache, backbone_id=self.backbone_id)
        self.text_features = self.text_features.to(self.device)
        self.logit_scale = self.clip_model.logit_scale.exp().float()

    @torch.no_grad()
    def model_inference(self, image):
        with self.autocast():
            feats = encode_images(self.clip_model, image)
        return zero_shot_logits(feats, self.text_features, self.logit_scale)

    def forward_backward(self, batch):
        raise RuntimeError("ZSCLIP trains nothing: run train.py with --eval-only")
