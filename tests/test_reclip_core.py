"""ReCLIP's framework-free core against methods/RECLIP.md, "Expected behaviour to test" (no Dassl needed)."""
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from clip_adapt.reclip import (agreement_cross_entropy, auto_epochs, class_centroids, knn_lists,
                                        label_propagation, normalized_affinity, project, projection_basis,
                                        projection_matrix, pseudo_label_round)
from clip_adapt.reclip.label_propagation import conjugate_gradient


# ---- helpers ---------------------------------------------------------------------------------------------
def chain_clusters(num_classes=4, per_class=60, dim=16, anchor_offset=4.0, seed=0):
    """Clusters on one great circle (1-D positions 10c + U(-3, 3), mapped to angles) plus tiny noise in the
    other dimensions. Anchor c sits just outside the right edge of its cluster (position 10c + offset): close
    to its cluster, yet the left part of cluster c is closer to anchor c-1 than to anchor c."""
    g = torch.Generator().manual_seed(seed)
    scale = math.pi / (10.0 * num_classes + 10)  # positions -> angles, the whole chain on less than pi

    def embed(pos):
        ang = pos * scale
        x = torch.zeros(len(pos), dim, dtype=torch.float64)
        x[:, 0], x[:, 1] = torch.cos(ang), torch.sin(ang)
        x[:, 2:] = 1e-3 * torch.randn(len(pos), dim - 2, generator=g, dtype=torch.float64)
        return F.normalize(x, dim=-1)

    labels = torch.arange(num_classes).repeat_interleave(per_class)
    pos = 10.0 * labels + (torch.rand(len(labels), generator=g, dtype=torch.float64) * 6 - 3)
    anchors = embed(10.0 * torch.arange(num_classes, dtype=torch.float64) + anchor_offset)
    return embed(pos), anchors, labels


def dense_reference(features, anchors, k, alpha):
    """The official algorithm with dense matrices and an exact solve (written independently of the core)."""
    x = F.normalize(torch.cat([anchors, features]).double(), dim=-1)
    m, c = x.shape[0], anchors.shape[0]
    a = (x @ x.t() + 1) / 2
    a = a * (1 - torch.eye(m, dtype=a.dtype))
    val, idx = a.topk(k, dim=1)
    top_a = torch.zeros_like(a).scatter_(1, idx, val)
    w = (top_a + top_a.t()) / 2
    d = w.sum(1).rsqrt()
    s = d[:, None] * w * d[None, :]
    y = torch.zeros(m, c, dtype=a.dtype)
    y[:c] = torch.eye(c, dtype=a.dtype)
    system = torch.eye(m, dtype=a.dtype) - alpha * s
    return system, s, y


# ---- label propagation -------------------------------------------------------------------------------------
def test_propagation_recovers_clusters_that_nearest_anchor_gets_wrong():
    feats, anchors, labels = chain_clusters()
    nearest_anchor = (feats @ anchors.t()).argmax(1)
    nearest_acc = (nearest_anchor == labels).double().mean().item()
    assert nearest_acc < 0.85, f"the fixture should fool the nearest anchor (accuracy {nearest_acc:.2f})"
    result = label_propagation(feats.float(), anchors.float(), k=10, alpha=0.99, cg_iters=20)
    assert result.labels.shape == labels.shape and result.scores.shape == (len(labels), anchors.shape[0])
    assert torch.equal(result.labels, result.scores.argmax(1))
    assert (result.labels == labels).double().mean().item() == 1.0


@pytest.mark.parametrize("chunk", [7, 32, 4096])
def test_knn_lists_match_a_dense_top_k(chunk):
    x = F.normalize(torch.randn(101, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=-1)
    cos, idx = knn_lists(x, 9, chunk=chunk)
    dense = x @ x.t()
    dense.fill_diagonal_(float("-inf"))
    ref_cos, ref_idx = dense.topk(9, dim=1)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-12)
    assert not (idx == torch.arange(101)[:, None]).any(), "a node is its own neighbour"


def test_knn_lists_clip_k_on_tiny_graphs():
    x = F.normalize(torch.randn(4, 3), dim=-1)
    cos, idx = knn_lists(x, 20, chunk=2)
    assert idx.shape == (4, 3)
    assert all(set(idx[i].tolist()) == set(range(4)) - {i} for i in range(4))


def test_sparse_affinity_equals_dense_construction():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(90, 8, dtype=torch.float64, generator=g)
    anchors = torch.randn(5, 8, dtype=torch.float64, generator=g)
    _, s_dense, _ = dense_reference(feats, anchors, k=6, alpha=0.99)
    x = F.normalize(torch.cat([anchors, feats]), dim=-1)
    s_sparse = normalized_affinity(*knn_lists(x, 6, chunk=16)).to_dense()
    torch.testing.assert_close(s_sparse, s_dense, rtol=0, atol=1e-12)


def test_sparse_propagation_equals_dense_exact_solve():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(150, 10, dtype=torch.float64, generator=g)
    anchors = torch.randn(6, 10, dtype=torch.float64, generator=g)
    system, _, y = dense_reference(feats, anchors, k=8, alpha=0.99)
    exact = torch.linalg.solve(system, y)
    result = label_propagation(feats, anchors, k=8, alpha=0.99, cg_iters=2000, tol=1e-13, chunk=32)
    torch.testing.assert_close(result.scores, exact[6:], rtol=0, atol=1e-5)
    torch.testing.assert_close(result.anchor_scores, exact[:6], rtol=0, atol=1e-5)
    assert torch.equal(result.labels, exact[6:].argmax(1))


def test_twenty_cg_iterations_equal_a_dense_cg_reference():
    """The official code stops CG after 20 iterations (scipy's cg on the dense matrix): same numbers."""
    cg = pytest.importorskip("scipy.sparse.linalg").cg
    feats, anchors, _ = chain_clusters(num_classes=5, per_class=50)  # long chains: CG converges slowly
    system, _, y = dense_reference(feats, anchors, k=6, alpha=0.99)
    ref = torch.stack([torch.from_numpy(cg(system.numpy(), y[:, c].numpy(), rtol=1e-6, maxiter=20)[0])
                       for c in range(5)], dim=1)
    exact = torch.linalg.solve(system, y)
    assert (ref - exact).abs().max() > 1e-4, "20 iterations should not have converged on this graph"
    result = label_propagation(feats, anchors, k=6, alpha=0.99, cg_iters=20, tol=1e-6, chunk=64)
    torch.testing.assert_close(result.scores, ref[5:], rtol=0, atol=1e-5)


def test_conjugate_gradient_stops_early_when_converged():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    b = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 3.0]], dtype=torch.float64)
    calls = []
    x = conjugate_gradient(lambda v: calls.append(1) or a @ v, b, max_iters=50, tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    assert len(calls) <= 4


def test_propagation_rejects_bad_inputs():
    with pytest.raises(ValueError, match="share D"):
        label_propagation(torch.randn(5, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match="ALPHA"):
        label_propagation(torch.randn(5, 4), torch.randn(2, 4), alpha=1.0)


@pytest.mark.slow
def test_propagation_memory_100k_nodes_well_under_4gb():
    """100k image nodes, D = 512, k = 20, C = 100, on CPU, in a fresh process: peak RSS well under 4 GB."""
    code = textwrap.dedent("""
        import json, resource, torch
        from clip_adapt.reclip import label_propagation
        torch.manual_seed(0)
        feats, anchors = torch.randn(100_000, 512), torch.randn(100, 512)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = label_propagation(feats, anchors, k=20, alpha=0.99, cg_iters=20)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"before_kb": before, "peak_kb": peak, "n": int(result.labels.numel())}))
    """)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["n"] == 100_000
    peak_gb, growth_gb = stats["peak_kb"] / 2**20, (stats["peak_kb"] - stats["before_kb"]) / 2**20
    assert peak_gb < 2.0, f"peak RSS {peak_gb:.2f} GB"
    assert growth_gb < 1.5, f"propagation grew RSS by {growth_gb:.2f} GB"


# ---- projection --------------------------------------------------------------------------------------------
def test_projection_is_symmetric_idempotent_and_drops_the_first_direction():
    t = F.normalize(torch.randn(12, 32, generator=torch.Generator().manual_seed(5)) + 2.0, dim=-1)  # shared offset
    p = projection_matrix(t.double())
    torch.testing.assert_close(p, p.t(), rtol=0, atol=1e-12)
    torch.testing.assert_close(p @ p, p, rtol=0, atol=1e-12)
    u, _, _ = torch.linalg.svd(t.double().t(), full_matrices=False)
    assert (p @ u[:, 0]).abs().max() < 1e-12
    for j in range(1, 12):  # the rest of the text span is kept
        torch.testing.assert_close(p @ u[:, j], u[:, j], rtol=0, atol=1e-12)
    assert abs(torch.trace(p).item() - 11) < 1e-9


def test_projection_rank_rule():
    t = torch.randn(12, 32)
    assert projection_basis(t).shape == (32, 11)  # r = D: the whole text span minus the first direction
    assert projection_basis(t, rank=5).shape == (32, 4)
    big = torch.randn(600, 512)
    assert projection_basis(big).shape == (512, 249)  # > 500 classes: r = 250
    with pytest.raises(ValueError, match="RANK"):
        projection_basis(t, rank=1)


def test_binary_task_warns():
    with pytest.warns(UserWarning, match="one-dimensional"):
        basis = projection_basis(torch.randn(2, 16))
    assert basis.shape == (16, 1)


def test_projected_coordinates_keep_the_cosines_of_the_renormalised_projection():
    g = torch.Generator().manual_seed(6)
    t, x = torch.randn(10, 24, generator=g, dtype=torch.float64), torch.randn(30, 24, generator=g, dtype=torch.float64)
    z = project(x, projection_basis(t))
    px = F.normalize(x @ projection_matrix(t), dim=-1)  # P is symmetric
    torch.testing.assert_close(z @ z.t(), px @ px.t(), rtol=0, atol=1e-12)


# ---- cross-modality self-training -------------------------------------------------------------------------
def test_disagreeing_samples_contribute_zero_gradient():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(8, 5, generator=g, requires_grad=True)
    pseudo = torch.randint(0, 5, (8,), generator=g)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    loss = agreement_cross_entropy(logits, pseudo, mask)
    loss.backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert torch.all(logits.grad[mask].abs().sum(1) > 0)
    # the mean over agreed samples (not divided by the batch size a second time)
    torch.testing.assert_close(loss, F.cross_entropy(logits[mask], pseudo[mask]))


def test_no_agreement_gives_zero_loss_and_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = agreement_cross_entropy(logits, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and torch.all(logits.grad == 0)


def test_disagreeing_samples_do_not_move_the_branch_parameters():
    """Through a real (tiny) CLIP branch: the parameter gradient of a batch equals that of its agreed part."""
    from clip_adapt.clip_loader import build_tiny_clip
    from clip_adapt.reclip import ReCLIPVisual

    branch = ReCLIPVisual(build_tiny_clip(seed=0), torch.randn(3, 32))
    g = torch.Generator().manual_seed(8)
    images = torch.randn(6, 3, 32, 32, generator=g)
    pseudo = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)

    def grads(x, y, m):
        branch.zero_grad()
        agreement_cross_entropy(branch(x), y, m).backward()
        return [p.grad.clone() for p in branch.parameters() if p.requires_grad]

    full = grads(images, pseudo, mask)
    agreed = grads(images[mask], pseudo[mask], torch.ones(int(mask.sum()), dtype=torch.bool))
    for a, b in zip(full, agreed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(a.abs().sum() > 0 for a in full)


def test_auto_epochs():
    assert auto_epochs(100) == 2
    assert auto_epochs(50_000) == 12
    assert auto_epochs(10_000_000) == 100


def test_centroids_average_assigned_features_and_fall_back_for_empty_classes():
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    labels = torch.tensor([0, 0, 2, 2])
    fallback = torch.tensor([[0, 0, 1.0], [0, 3.0, 0], [1.0, 1, 1]])
    c = class_centroids(feats, labels, 3, fallback)
    torch.testing.assert_close(c[0], F.normalize(torch.tensor([1.0, 1, 0]), dim=0))
    torch.testing.assert_close(c[1], torch.tensor([0, 1.0, 0]))  # no sample: the (normalised) fallback
    torch.testing.assert_close(c[2], F.normalize(torch.tensor([1.0, 0, 1]), dim=0))


def test_pseudo_label_round_on_clusters():
    """Blobs whose text anchors share a strong common direction (a modality gap the projection removes)."""
    g = torch.Generator().manual_seed(9)
    centres = F.normalize(torch.randn(5, 32, generator=g), dim=-1)
    text_gap, image_gap = F.normalize(torch.randn(2, 32, generator=g), dim=-1)
    labels = torch.arange(5).repeat_interleave(40)
    feats = F.normalize(centres[labels] + 2 * image_gap + 0.15 * torch.randn(200, 32, generator=g), dim=-1)
    anchors_v = F.normalize(centres + 3 * text_gap, dim=-1)
    anchors_t = F.normalize(centres + 3 * text_gap + 0.05 * torch.randn(5, 32, generator=g), dim=-1)
    rnd = pseudo_label_round(feats, feats, anchors_v, anchors_t, k=10)
    assert rnd.labels_v.shape == rnd.labels_t.shape == labels.shape
    assert (rnd.labels_v == labels).float().mean() > 0.95
    assert (rnd.labels_t == labels).float().mean() > 0.95
    assert rnd.agree.float().mean() > 0.9
    # ReCLIP-V's new classifier: the centroids of its assignment, close to the (image-side) cluster means
    torch.testing.assert_close(rnd.centroids.norm(dim=1), torch.ones(5))
    means = F.normalize(torch.stack([feats[labels == c].mean(0) for c in range(5)]), dim=-1)
    assert (rnd.centroids * means).sum(1).min() > 0.99


# ---- branches ----------------------------------------------------------------------------------------------
def test_branches_train_only_their_norms():
    from clip_adapt.clip_loader import build_tiny_clip
    from clip_adapt.reclip import ReCLIPText, ReCLIPVisual

    v = ReCLIPVisual(build_tiny_clip(seed=0, arch="rn"), torch.randn(3, 32))
    modules = dict(v.named_modules())
    names = {n for n, p in v.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("clip.visual.") for n in names)
    kinds = {type(modules[n.rsplit(".", 1)[0]]) for n in names}
    assert torch.nn.BatchNorm2d in kinds and kinds <= {torch.nn.BatchNorm2d, torch.nn.LayerNorm}
    every_bn = {f"{m}.{p}" for m, mod in modules.items() if isinstance(mod, torch.nn.BatchNorm2d)
                for p in ("weight", "bias")}
    assert every_bn <= names
    vit = ReCLIPVisual(build_tiny_clip(seed=0), torch.randn(3, 32))
    names = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert {"clip.visual.ln_pre.weight", "clip.visual.ln_post.bias"} <= names
    assert all(".ln_" in n for n in names)
    t = ReCLIPText(build_tiny_clip(seed=0), ["cat", "dog", "bird"], "a photo of a {}.", ["a {}.", "art of a {}."])
    names = {n for n, p in t.named_parameters() if p.requires_grad}
    assert "clip.ln_final.weight" in names and all(n.startswith(("clip.transformer.", "clip.ln_final.")) for n in names)
    assert all(".ln_" in n for n in names)
    # train mode never unfreezes BatchNorm statistics
    v.train()
    assert not v.clip.training and not any(m.training for m in v.clip.modules())
    stats = v.clip.visual.bn1.running_mean.clone()
    v(torch.randn(2, 3, 32, 32))
    assert torch.equal(stats, v.clip.visual.bn1.running_mean)


def test_text_branch_embeddings_have_gradient_and_anchors_do_not():
    from clip_adapt.clip_loader import build_tiny_clip
    from clip_adapt.reclip import ReCLIPText

    t = ReCLIPText(build_tiny_clip(seed=0), ["cat", "dog"], "a photo of a {}.", ["a {}.", "art of a {}."])
    emb = t.class_embeddings()
    assert emb.requires_grad and emb.shape == (2, 32)
    anchors = t.anchor_embeddings()
    assert not anchors.requires_grad and anchors.shape == (2, 32)
    logits = t(torch.randn(3, 3, 32, 32))
    logits.sum().backward()
    assert t.clip.ln_final.weight.grad is not None
    assert all(p.grad is None for p in t.clip.visual.parameters())


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_fp16_clip_keeps_the_trained_norms_in_fp32(arch):
    """CLIP's fp16 conversion leaves LayerNorm/BatchNorm in fp32, so SGD updates of 1e-3 are not lost."""
    from clip.model import convert_weights

    from clip_adapt.clip_loader import build_tiny_clip
    from clip_adapt.reclip import ReCLIPText, ReCLIPVisual

    model = build_tiny_clip(seed=0, arch=arch)
    convert_weights(model)
    assert model.dtype == torch.float16
    v = ReCLIPVisual(model, torch.randn(3, 32))
    trainable = [p for p in v.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    model_t = build_tiny_clip(seed=0, arch=arch)
    convert_weights(model_t)
    t = ReCLIPText(model_t, ["cat", "dog", "bird"], "a photo of a {}.", ["a {}."])
    trainable = [p for p in t.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
