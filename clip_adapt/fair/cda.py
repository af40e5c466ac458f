"""Class Description Anchors (methods/FAIR.md, part 2).

Learnable anchors a_{c,j} (C x M x D) initialised from the frozen CLIP text embeddings t_{c,j} of the class
descriptions (classes with fewer than M descriptions are padded and masked), and fixed per-description weights
v_{c,j} = softmax_j(tau_t * cos(t_{c,j}, t_c^name)) over the valid descriptions of class c.
"""
import hashlib
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..text import encode_texts


def pad_descriptions(descriptions, max_per_class=None):
    """(flat sentence list, C x M bool mask) for per-class sentence lists; M = the longest list (<= max)."""
    lists = [d[:max_per_class] if max_per_class else list(d) for d in descriptions]
    m = max((len(d) for d in lists), default=0)
    mask = torch.zeros(len(lists), m, dtype=torch.bool)
    for c, d in enumerate(lists):
        mask[c, :len(d)] = True
    return [s for d in lists for s in d], mask


def description_embeddings(model, descriptions, max_per_class=None, cache=None, backbone_id=None):
    """(C x M x D normalised text embeddings, zero where padded; C x M mask) of the descriptions.

    All sentences go through CLIP's text encoder once (batched); with a FeatureCache and a backbone id the
    result is read from disk on later runs.
    """
    flat, mask = pad_descriptions(descriptions, max_per_class)

    def compute():
        feats = encode_texts(model, flat).cpu()
        out = torch.zeros(*mask.shape, feats.shape[-1])
        out[mask] = feats
        return out

    if cache is None or backbone_id is None:
        return compute(), mask
    digest = hashlib.sha1(json.dumps([list(d) for d in descriptions]).encode()).hexdigest()
    key = {"kind": "fair_descriptions", "backbone": backbone_id, "sentences_sha1": digest,
           "max_per_class": max_per_class}
    return cache.get_or_compute(key, compute), mask


def description_weights(desc_emb, mask, name_emb, tau_t):
    """v_{c,j} = softmax_j(tau_t * cos(t_{c,j}, t_c^name)) over valid j; 0 at padded j (FAIR.md, part 2)."""
    cos = torch.einsum("cmd,cd->cm", F.normalize(desc_emb.float(), dim=-1), F.normalize(name_emb.float(), dim=-1))
    return torch.softmax((tau_t * cos).masked_fill(~mask, float("-inf")), dim=1)


class ClassDescriptionAnchors(nn.Module):
    """CDA: the learnable anchors (parameter `anchors`), their mask and fixed weights v (buffers)."""

    def __init__(self, desc_emb, mask, name_emb, tau_t):
        super().__init__()
        mask = mask.bool()
        if not mask.any(dim=1).all():
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"CDA: classes {empty} have no description")
        self.anchors = nn.Parameter(F.normalize(desc_emb.float(), dim=-1) * mask.unsqueeze(-1))
        self.register_buffer("mask", mask)
        self.register_buffer("v", description_weights(desc_emb, mask, name_emb, tau_t))

    @property
    def num_classes(self):
        return self.anchors.shape[0]

    def prototypes(self):
        """P_c = sum_j v_{c,j} a_{c,j} / |a_{c,j}| (C x D, not normalised): LAS(x, c) = h(x) . P_c (see las.py)."""
        return torch.einsum("cm,cmd->cd", self.v, F.normalize(self.anchors, dim=-1))
