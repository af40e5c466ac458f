"""Optimisers and LR schedules built from torch's own classes (Dassl's warmup scheduler fails on torch >= 2.7).

The schedule is stepped once per epoch: optional warmup (constant or linear) then cosine to OPTIM.MIN_LR,
composed with `SequentialLR`; its `state_dict()` holds only numbers, so checkpoints load with weights_only.
"""
import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR, StepLR

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "single_step", "constant")


def decay_groups(module, weight_decay):
    """AdamW parameter groups of `module`'s trainable parameters: weight decay on matrices and anchors (ndim >= 2),
    none on norm parameters and biases."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(params, optim_cfg):
    """SGD | Adam | AdamW from cfg.OPTIM (NAME, LR, WEIGHT_DECAY, MOMENTUM, ADAM_BETA1/2).

    `params` may be an iterable of tensors or of param-group dicts (e.g. no weight decay on biases).
    """
    name = optim_cfg.NAME.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"OPTIM.NAME must be one of {OPTIMIZERS}, got {optim_cfg.NAME!r}")
    params = list(params)
    if not params:
        raise ValueError("build_optimizer: no trainable parameters")
    kw = dict(lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY)
    if name == "sgd":
        return torch.optim.SGD(params, momentum=optim_cfg.MOMENTUM, **kw)
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, betas=betas, **kw)


def build_scheduler(optimizer, optim_cfg, max_epoch=None):
    """Per-epoch schedule: [warmup of OPTIM.WARMUP_EPOCH epochs] then OPTIM.LR_SCHEDULER.

    Warmup types: `constant` (lr = WARMUP_CONS_LR) or `linear` (from WARMUP_MIN_LR up to LR).
    """
    max_epoch = int(max_epoch or optim_cfg.MAX_EPOCH)
    kind = optim_cfg.LR_SCHEDULER.lower()
    if kind not in SCHEDULERS:
        raise ValueError(f"OPTIM.LR_SCHEDULER must be one of {SCHEDULERS}, got {optim_cfg.LR_SCHEDULER!r}")
    warmup = max(0, int(optim_cfg.WARMUP_EPOCH))
    warmup = min(warmup, max_epoch - 1) if max_epoch > 1 else 0
    main_epochs = max(1, max_epoch - warmup)
    if kind == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=main_epochs, eta_min=optim_cfg.MIN_LR)
    elif kind == "single_step":
        step = optim_cfg.STEPSIZE[0] if optim_cfg.STEPSIZE[0] > 0 else main_epochs
        main = StepLR(optimizer, step_size=step, gamma=optim_cfg.GAMMA)
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    base = optim_cfg.LR
    if optim_cfg.WARMUP_TYPE == "constant":
        first = ConstantLR(optimizer, factor=optim_cfg.WARMUP_CONS_LR / base, total_iters=warmup)
    elif optim_cfg.WARMUP_TYPE == "linear":
        first = LinearLR(optimizer, start_factor=max(optim_cfg.WARMUP_MIN_LR / base, 1e-8), end_factor=1.0,
                         total_iters=warmup)
    else:
        raise ValueError(f"OPTIM.WARMUP_TYPE must be constant or linear, got {optim_cfg.WARMUP_TYPE!r}")
    return SequentialLR(optimizer, schedulers=[first, main], milestones=[warmup])
