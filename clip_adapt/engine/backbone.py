"""The data pipeline of an open_clip backbone: its own preprocessing in cfg.INPUT, set before any loader is built.

The rule (docs/OPENCLIP.md): with MODEL.BACKBONE.NAME an open_clip model and MODEL.BACKBONE.OPENCLIP_PREPROCESS on,
each of INPUT.SIZE, PIXEL_MEAN, PIXEL_STD and INTERPOLATION that still holds Dassl's default value (no yaml file or
command line changed it) takes the model's value (image size from its architecture, the rest from its pretrained
tag; clip_adapt/openclip_loader.py). Dassl's test and train transforms, FAIR's views and crops and DAC's passes
all read cfg.INPUT afterwards. A name that is not an open_clip model leaves cfg untouched.
"""
from dassl.config import get_cfg_default

from clip_adapt.openclip_loader import input_overrides, is_openclip_name, preprocess_config


def apply_backbone_preprocessing(cfg):
    """Set the open_clip model's preprocessing into cfg.INPUT (see the module docstring); returns what changed."""
    bb = cfg.MODEL.BACKBONE
    if not is_openclip_name(bb.NAME) or not bb.get("OPENCLIP_PREPROCESS", True):
        return {}
    pp = preprocess_config(bb.NAME)
    changes = input_overrides(cfg.INPUT, pp, get_cfg_default().INPUT)
    if changes:
        frozen = cfg.is_frozen()
        cfg.defrost()
        for key, value in changes.items():
            cfg.INPUT[key] = value
        if frozen:
            cfg.freeze()
        shown = ", ".join(f"INPUT.{k} = {v}" for k, v in changes.items())
        print(f"open_clip preprocessing of {bb.NAME}: {shown}")
    if pp.get("resize_mode", "shortest") != "shortest":
        print(f"Note: {bb.NAME} was trained with resize mode {pp['resize_mode']!r}; the loaders resize the short "
              f"side and centre-crop")
    return changes
