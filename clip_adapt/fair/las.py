"""Learned Alignment Score (methods/FAIR.md, part 4) and the training-free WCA score it equals at init.

LAS(x, c) = sum_i w_i sum_j v_{c,j} cos(f_i, a_{c,j}). Because cos(f_i, a) = f_i . a / |a| for a normalised f_i,
the double sum factorises: LAS(x, c) = h(x) . P_c with h(x) = sum_i w_i f_i (B x D) and
P_c = sum_j v_{c,j} a_{c,j} / |a_{c,j}| (ClassDescriptionAnchors.prototypes, C x D) -- one B x D x C matmul
instead of a B x N x C x M tensor.
"""
import torch
import torch.nn.functional as F


def pooled_crop_feature(crop_feats, weights):
    """h(x) = sum_i w_i f_i: B x N x D normalised crop features, B x N weights -> B x D."""
    return torch.einsum("bn,bnd->bd", weights.to(crop_feats.dtype), crop_feats)


def las_scores(crop_feats, weights, prototypes):
    """LAS (cosine scale, B x C) from crop features, crop weights and CDA prototypes."""
    return pooled_crop_feature(crop_feats, weights) @ prototypes.t().to(crop_feats.dtype)


def wca_scores(crop_feats, weights, desc_emb, desc_weights):
    """Training-free crop-to-description score (WCA): sum_i w_i sum_j v_{c,j} cos(f_i, t_{c,j}), B x C.

    The explicit pairwise form (B x N x C x M cosines); with the CDA at their initial values, LAS equals it.
    Padded descriptions carry v = 0.
    """
    cos = torch.einsum("bnd,cmd->bncm", F.normalize(crop_feats, dim=-1), F.normalize(desc_emb, dim=-1))
    return torch.einsum("bn,cm,bncm->bc", weights, desc_weights, cos)
