"""DAC's trainable head on frozen CLIP features (methods/DAC.md, parts 1-4): adapter g, text modulation, cache model,
final logits s f W'^T + alpha * exp(-beta (1 - g(f) K^T)) L, and the loss used to train both parts on the cache."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .adapter import IntraModalAdapter, supervised_contrastive_loss
from .cache_model import cache_keys, cache_logits, cache_values
from .sampler import epoch_batches
from .text_modulation import TextModulation


class DACHead(nn.Module):
    """Adapter g (DAC-V) and text modulation W' (DAC-T); CLIP itself is never part of it.

    text_embeddings: C x D normalised class embeddings W (a non-persistent buffer: rebuilt from the class names
    of the run, so a checkpoint holds only what was trained); logit_scale: s = exp(CLIP's logit_scale).
    """

    def __init__(self, text_embeddings, logit_scale, residual=False, text_mod="residual", gamma=1.0,
                 classnames=None):
        super().__init__()
        dim = text_embeddings.shape[1]
        self.adapter = IntraModalAdapter(dim, residual=residual)
        self.text_mod = TextModulation(text_embeddings, mode=text_mod, gamma=gamma)
        self.text_mod._buffers.pop("base")
        self.text_mod.register_buffer("base", text_embeddings.detach().float().clone(), persistent=False)
        self.register_buffer("logit_scale", torch.as_tensor(float(logit_scale)), persistent=False)
        self.classnames = list(classnames) if classnames is not None else None

    # class names travel with the state dict (nn.Module extra state), for remapping to another class set
    def get_extra_state(self):
        return {"classnames": self.classnames}

    def set_extra_state(self, state):
        self.loaded_classnames = (state or {}).get("classnames")

    def text_logits(self, features):
        """s f W'^T (DAC.md, part 2)."""
        return self.logit_scale * features @ self.text_mod().t()

    def image_logits(self, features, keys, values, beta):
        """exp(-beta (1 - g(f) K^T)) L (DAC.md, part 1)."""
        return cache_logits(self.adapter(features), keys, values, beta)

    def forward(self, features, keys=None, values=None, alpha=0.0, beta=1.0):
        """Final logits s f W'^T + alpha * image logits (DAC.md, part 3); alpha = 0 or no cache: text logits."""
        logits = self.text_logits(features)
        if keys is None or alpha == 0:
            return logits
        return logits + alpha * self.image_logits(features, keys, values, beta)

    @torch.no_grad()
    def build_cache(self, view_features, labels, num_classes):
        """(keys, values) of the few-shot set from its A x N x D view features (DAC.md, part 1)."""
        return cache_keys(view_features, self.adapter), cache_values(labels, num_classes)

    def loss(self, features, labels, temperature=0.07, gather=None):
        """Supervised intra-modal contrastive loss on g(f) plus cross-entropy on s f W'^T (DAC.md, parts 1-2).

        The two parts share no parameter, so the sum trains each with its own loss. Returns (loss, parts).
        gather: with data-parallel shards, clip_adapt.distributed.gather_batch -- the losses are then those of the
        global batch (the contrastive pairs span every shard).
        """
        gather = gather or (lambda t: t)
        labels = gather(labels)
        con = supervised_contrastive_loss(gather(self.adapter(features)), labels, temperature)
        ce = F.cross_entropy(gather(self.text_logits(features)), labels)
        return con + ce, {"loss_con": con.detach(), "loss_ce": ce.detach()}


def _norm_name(name):
    return " ".join(str(name).replace("_", " ").lower().split())


def class_index_map(source_names, target_names):
    """For each target class, the index of the source class with the same name (case, '_' and spaces ignored).

    Used to evaluate a head trained on ImageNet (1000 classes) on ImageNet-A/-R (200 of them). Raises naming
    the target classes that have no source class.
    """
    index = {}
    for i, n in enumerate(source_names):
        index.setdefault(_norm_name(n), i)
    missing = [n for n in target_names if _norm_name(n) not in index]
    if missing:
        raise KeyError(f"{len(missing)} target class(es) have no class of the same name in the training classes, "
                       f"e.g. {missing[:5]}")
    return torch.tensor([index[_norm_name(n)] for n in target_names], dtype=torch.long)


def remap_state_dict(state, source_names, target_names):
    """A DACHead state dict trained on `source_names`, with per-class rows reordered/selected for `target_names`."""
    idx = class_index_map(source_names, target_names)
    out = dict(state)
    if "text_mod.delta" in out:
        out["text_mod.delta"] = out["text_mod.delta"][idx].clone()
    if "_extra_state" in out:
        out["_extra_state"] = {**(out["_extra_state"] or {}), "classnames": list(target_names)}
    return out


def train_on_cache(head, view_features, labels, epochs=20, batch_size=256, lr=1e-3, weight_decay=0.01,
                   temperature=0.07, min_lr=0.0, generator=None, progress=False, epoch_views="one",
                   sampler="class_views", views=2, images_per_class=4):
    """Train both parts of `head` on cached features: AdamW, cosine per epoch (DAC.md, part 4).

    view_features: A x N x D; labels: N. Batches come from `sampler.epoch_batches` (class_views: every image once
    per epoch as `views` distinct passes, so every anchor has a positive; random: EPOCH_VIEWS). The encoder never
    runs here. Returns the mean loss of each epoch. (The Dassl trainer runs the same step and the same batches
    inside Dassl's loop; this loop serves the bench and the tests.)
    """
    a, n, d = view_features.shape
    flat = view_features.reshape(a * n, d)
    flat_labels = labels.repeat(a)
    params = [p for p in head.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(1, epochs), eta_min=min_lr)
    history = []
    for _ in tqdm(range(epochs), desc="DAC on cached features", disable=not progress, leave=False):
        total, count = 0.0, 0
        for idx in epoch_batches(labels, a, batch_size, sampler, views, images_per_class, epoch_views, generator):
            loss, _ = head.loss(flat[idx], flat_labels[idx], temperature)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += loss.item() * len(idx)
            count += len(idx)
        sched.step()
        history.append(total / max(count, 1))
        if not math.isfinite(history[-1]):
            raise FloatingPointError(f"train_on_cache: non-finite loss at epoch {len(history)}")
    return history
