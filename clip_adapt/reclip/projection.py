"""ReCLIP projection space (methods/RECLIP.md, part 1).

T (D x C) holds the class text embeddings as columns; its SVD T = U S V^T (not centred) gives the text span.
The first singular direction is shared by all classes (class-agnostic), so it is dropped:
P = U[:, 1:r] U[:, 1:r]^T. Image and text features are projected with P and re-normalised for the graph only
(never for logits).

`projection_basis` returns B = U[:, 1:r] (D x m, orthonormal columns). Because (P x_i) . (P x_j) = (B^T x_i) .
(B^T x_j), the coordinates `project(x, B)` = normalise(B^T x) give exactly the cosine similarities of the
re-normalised P x, in m <= min(C, r) - 1 dimensions instead of D: the graph is cheaper to build and identical.
"""
import warnings

import torch
import torch.nn.functional as F

LARGE_LABEL_SPACE = 500  # more classes than this: default rank 250 (official code's --cut_dim for such datasets)
LARGE_LABEL_SPACE_RANK = 250


def default_rank(num_classes, dim):
    """r when TRAINER.RECLIP.RANK is -1: D, or 250 for more than 500 classes (RECLIP.md, part 1)."""
    return LARGE_LABEL_SPACE_RANK if num_classes > LARGE_LABEL_SPACE else dim


def projection_basis(text_embeddings, rank=-1):
    """B = U[:, 1:r] from the SVD of T, where `text_embeddings` is C x D (one row per class).

    rank: r (keep singular directions 1 .. r-1); -1 or None = `default_rank`. A binary task leaves one
    direction (the graph becomes one-dimensional): a warning says so.
    """
    if text_embeddings.dim() != 2:
        raise ValueError(f"text embeddings must be C x D, got shape {tuple(text_embeddings.shape)}")
    num_classes, dim = text_embeddings.shape
    if num_classes < 2:
        raise ValueError(f"ReCLIP's projection needs at least 2 classes, got {num_classes}")
    if rank is None or rank < 0:
        rank = default_rank(num_classes, dim)
    if rank < 2:
        raise ValueError(f"TRAINER.RECLIP.RANK must be -1 or >= 2 (r keeps directions 1..r-1), got {rank}")
    T = text_embeddings.detach().to(torch.float64).t()  # D x C
    U, _, _ = torch.linalg.svd(T, full_matrices=False)  # U: D x min(D, C), singular values descending
    basis = U[:, 1:rank]
    if basis.shape[1] == 1:
        warnings.warn(
            f"ReCLIP projection: with {num_classes} classes the text span minus its first direction is "
            "one-dimensional; label propagation works on a line (RECLIP.md, part 1: binary tasks collapse)",
            stacklevel=2,
        )
    out_dtype = text_embeddings.dtype if text_embeddings.is_floating_point() else torch.float32
    return basis.to(out_dtype if out_dtype != torch.float16 else torch.float32)


def projection_matrix(text_embeddings, rank=-1):
    """P = U[:, 1:r] U[:, 1:r]^T (D x D): symmetric, idempotent, annihilates the first singular direction."""
    basis = projection_basis(text_embeddings, rank)
    return basis @ basis.t()


def project(features, basis):
    """Re-normalised coordinates of P x in the basis B (N x m): same cosine similarities as normalise(P x)."""
    coords = features.to(basis.dtype) @ basis.to(features.device)
    return F.normalize(coords, dim=-1)
