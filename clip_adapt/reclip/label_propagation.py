"""Sparse kNN label propagation (methods/RECLIP.md, part 2), in O(N*k) memory.

Nodes are the C class anchors (the only labelled nodes, node c has label c) followed by the N image features.
  a_ij = (cos_ij + 1) / 2, zero diagonal, keep the top-k per row      -> A (sparse, (N+C) x k entries)
  W = (A + A^T) / 2,  S = D^-1/2 W D^-1/2,  D = diag(W 1)
  solve (I - alpha S) F = Y by conjugate gradient (<= `cg_iters` iterations, all classes at once)
  pseudo-label of an image node = argmax_c F[node, c]

The official code builds dense (N+C) x (N+C) matrices (and computes the degrees with an O(N^3) product). Here:
- the top-k search runs over square blocks of the similarity matrix (`chunk` x `chunk`), visiting each pair of
  blocks once and using it for both block rows (the matrix is symmetric), keeping a running top-k per row;
- W and S are sparse (CSR), at most 2 (N+C) k entries;
- F, the residual and the search directions are (N+C) x C dense tensors (the per-class scores are the output).
Peak memory is O((N+C) (k + C + D) + chunk^2); nothing is ever N x N. Everything runs on the features' device.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm


@dataclass
class PropagationResult:
    labels: torch.Tensor  # N, pseudo-label of each image node
    scores: torch.Tensor  # N x C, F restricted to the image nodes
    anchor_scores: torch.Tensor  # C x C, F at the anchor nodes


def _compute_dtype(x):
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _merge_topk(best_val, best_idx, val, idx, k):
    """Keep the k largest of the running lists and a new candidate block (both rows x *)."""
    all_val = torch.cat([best_val, val], dim=1)
    all_idx = torch.cat([best_idx, idx], dim=1)
    top_val, pos = all_val.topk(k, dim=1)
    return top_val, all_idx.gather(1, pos)


def knn_lists(x, k, chunk=4096, progress=False):
    """Top-k cosine neighbours of every row of `x` (rows must be normalised), excluding the row itself.

    Returns (cos M x k, idx M x k), sorted by decreasing similarity. Memory: M x k lists plus one
    `chunk` x `chunk` block of similarities; each unordered pair of blocks is computed once.
    """
    m = x.shape[0]
    if m < 2:
        raise ValueError(f"label propagation needs at least 2 nodes, got {m}")
    k = min(int(k), m - 1)
    if k < 1:
        raise ValueError(f"TRAINER.RECLIP.KNN must be >= 1, got {k}")
    chunk = max(int(chunk), 1)
    best_val = x.new_full((m, k), float("-inf"))
    best_idx = torch.zeros((m, k), dtype=torch.long, device=x.device)
    starts = list(range(0, m, chunk))
    pairs = [(i, j) for a, i in enumerate(starts) for j in starts[a:]]
    for i0, j0 in tqdm(pairs, desc="kNN graph", unit="block", disable=not progress, leave=False):
        i1, j1 = min(i0 + chunk, m), min(j0 + chunk, m)
        sim = x[i0:i1] @ x[j0:j1].t()
        if i0 == j0:
            sim.fill_diagonal_(float("-inf"))
        # rows i0:i1 against columns j0:j1
        kk = min(k, j1 - j0)
        val, idx = sim.topk(kk, dim=1)
        best_val[i0:i1], best_idx[i0:i1] = _merge_topk(best_val[i0:i1], best_idx[i0:i1], val, idx + j0, k)
        if i0 != j0:  # the same block, transposed: rows j0:j1 against columns i0:i1
            kk = min(k, i1 - i0)
            val, idx = sim.t().topk(kk, dim=1)
            best_val[j0:j1], best_idx[j0:j1] = _merge_topk(best_val[j0:j1], best_idx[j0:j1], val, idx + i0, k)
        del sim
    return best_val, best_idx


def normalized_affinity(knn_cos, knn_idx):
    """S = D^-1/2 W D^-1/2 as a sparse CSR matrix, W = (A + A^T)/2, A_ij = (cos_ij + 1)/2 on the kNN lists."""
    m, k = knn_idx.shape
    a = ((knn_cos + 1) / 2).reshape(-1)
    rows = torch.arange(m, device=knn_idx.device).repeat_interleave(k)
    cols = knn_idx.reshape(-1)
    ij = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    w = torch.sparse_coo_tensor(ij, torch.cat([a, a]) / 2, (m, m)).coalesce()  # duplicates summed
    del ij, rows, cols, a
    ij, vals = w.indices(), w.values()
    degree = torch.zeros(m, dtype=vals.dtype, device=vals.device).index_add_(0, ij[0], vals)
    d_inv_sqrt = torch.where(degree > 0, degree.clamp_min(torch.finfo(vals.dtype).tiny).rsqrt(),
                             torch.zeros_like(degree))
    vals = vals * d_inv_sqrt[ij[0]] * d_inv_sqrt[ij[1]]
    return torch.sparse_coo_tensor(ij, vals, (m, m), is_coalesced=True).to_sparse_csr()


def conjugate_gradient(matvec, b, max_iters=20, tol=1e-6):
    """Solve A X = B for a symmetric positive-definite A given as `matvec`, every column of B independently.

    Starts from X = 0 and runs at most `max_iters` iterations; stops early when every column's residual norm
    is <= tol * ||b_column|| (the stopping rule of scipy's cg with rtol = tol, as the official code calls it).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    threshold = (tol * b.norm(dim=0)) ** 2
    for _ in range(int(max_iters)):
        if bool((rs <= threshold).all()):
            break
        ap = matvec(p)
        pap = (p * ap).sum(0)
        step = torch.where(pap > 0, rs / pap.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        x.add_(p * step)
        r.sub_(ap * step)
        rs_new = (r * r).sum(0)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        p = r + p * beta
        rs = rs_new
    return x


def label_propagation(features, anchors, k=20, alpha=0.99, cg_iters=20, chunk=4096, tol=1e-6, progress=False):
    """Pseudo-labels and per-class scores of N image features from C labelled anchors (RECLIP.md, part 2).

    features: N x D image features (projected by the caller if wanted; normalised here).
    anchors: C x D class anchors (text embeddings or centroids, same space as `features`).
    Returns a `PropagationResult` (labels N, scores N x C, anchor_scores C x C) on the features' device.
    """
    if features.dim() != 2 or anchors.dim() != 2 or features.shape[1] != anchors.shape[1]:
        raise ValueError(f"features (N x D) and anchors (C x D) must share D; got {tuple(features.shape)} and "
                         f"{tuple(anchors.shape)}")
    if not 0 < alpha < 1:
        raise ValueError(f"TRAINER.RECLIP.ALPHA must be in (0, 1), got {alpha}")
    dtype = _compute_dtype(features)
    num_classes = anchors.shape[0]
    with torch.no_grad():
        nodes = torch.cat([anchors.to(features.device, dtype), features.to(dtype)])
        nodes = F.normalize(nodes, dim=-1)
        knn_cos, knn_idx = knn_lists(nodes, k, chunk=chunk, progress=progress)
        del nodes
        s = normalized_affinity(knn_cos, knn_idx)
        del knn_cos, knn_idx
        y = torch.zeros(s.shape[0], num_classes, dtype=dtype, device=features.device)
        y[:num_classes] = torch.eye(num_classes, dtype=dtype, device=features.device)
        scores = conjugate_gradient(lambda v: v - alpha * (s @ v), y, max_iters=cg_iters, tol=tol)
        del s, y
        image_scores = scores[num_classes:]
        return PropagationResult(labels=image_scores.argmax(1), scores=image_scores,
                                 anchor_scores=scores[:num_classes])
