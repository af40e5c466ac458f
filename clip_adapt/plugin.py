"""Registers this project with Dassl: `import clip_adapt.plugin` registers the trainers FAIR, ReCLIP, DAC and ZSCLIP,
the baselines TipAdapter, TipAdapterF, LinearProbe, SelfTraining and DPA (docs/BASELINES.md), and every dataset of
the catalog (a dataset name already registered, e.g. CoOp's ImageNetV2, is kept as it is).
`extend_cfg(cfg)` declares our config keys (clip_adapt/config.py), leaving keys already present untouched.

Inside a CoOp checkout these are the two lines to add to its train.py (docs/COOP.md).
"""
from clip_adapt.config import extend_cfg  # noqa: F401
# each module registers its trainer
from clip_adapt.engine import dac, dpa, fair, linear_probe, reclip, self_training, tipadapter, zsclip  # noqa: F401
from clip_adapt.engine.datasets import register_all

DATASETS = register_all()
TRAINERS = (zsclip.ZSCLIP, fair.FAIR, reclip.ReCLIP, dac.DAC,
            tipadapter.TipAdapter, tipadapter.TipAdapterF, linear_probe.LinearProbe,
            self_training.SelfTraining, dpa.DPA)
