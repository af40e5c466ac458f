"""Tiny randomly initialised open_clip models for tests (no weights are downloaded; nothing here is pretrained).

`register()` adds the architectures of tests/openclip_configs/*.json to open_clip (open_clip.add_model_config) and
a tiny timm trunk: a SigLIP-style ViT (attention-pool head, no projection, 32 px); the ConvNeXt one is timm's
smallest, convnext_atto. The SigLIP-style model (`tiny-oc-sigmoid`: a logit bias, a text tower without causal mask
pooled at the last token) keeps open_clip's CLIP tokenizer as a stand-in: SigLIP's own (sentencepiece, from the
Hugging Face hub) is not available offline. Importable by `train.py --import tests/openclip_fixtures.py`.
"""
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent / "openclip_configs"
VIT, RN, SIGMOID, CONVNEXT = "tiny-oc-vit", "tiny-oc-rn", "tiny-oc-sigmoid", "tiny-oc-convnext"


def _register_timm():
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model("tiny_siglip_vit_test"):
        @register_model
        def tiny_siglip_vit_test(pretrained=False, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                   "cache_dir")}
            kwargs.setdefault("global_pool", "map")
            return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                                     class_token=False, **kwargs)


def register():
    import open_clip

    _register_timm()
    if open_clip.get_model_config(VIT) is None:
        open_clip.add_model_config(CONFIGS)


def build(arch, seed=0):
    """A randomly initialised open_clip model of a tiny architecture, seeded (the global RNG is restored)."""
    from clip_adapt.openclip_loader import build_model

    register()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_model(arch).eval()
    finally:
        torch.random.set_rng_state(state)


def save(path, arch, seed=0):
    """Save a tiny model's state dict to `path` (.pt / .bin: torch.save; .safetensors); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = build(arch, seed).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


register()
