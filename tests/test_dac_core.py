"""DAC core (clip_adapt/dac): the spec's "Expected behaviour" (methods/DAC.md) without Dassl."""
import pytest
import torch
import torch.nn.functional as F

from clip_adapt.clip_loader import build_tiny_clip
from clip_adapt.dac import (DACHead, IntraModalAdapter, TextModulation, cache_logits, class_index_map, grid,
                                     mean_intra_class_cosine, remap_state_dict, search_alpha_beta,
                                     supervised_contrastive_loss, train_on_cache)
from clip_adapt.text import class_embeddings
from clip_adapt.zeroshot import encode_images, zero_shot_logits

CLASSES = ["cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def clip_setup():
    torch.manual_seed(0)
    model = build_tiny_clip(seed=0).eval()
    text = class_embeddings(model, CLASSES, ["a photo of a {}."])
    with torch.no_grad():
        images = torch.randn(12, 3, 32, 32)
        feats = encode_images(model, images)
    # the tiny random CLIP sends every noise image to one class: pull each feature towards a class so that
    # zero-shot predictions vary (they are still CLIP image features against CLIP text embeddings)
    feats = F.normalize(feats + 2.0 * text[torch.arange(12) % len(CLASSES)], dim=-1)
    return model, text, feats, model.logit_scale.exp().item()


def _views(a=3, n=8, d=32, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = F.normalize(torch.randn(a, n, d, generator=g), dim=-1)
    return views, torch.arange(n) % classes


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("mode", ["residual", "scale_shift"])
def test_untrained_head_with_alpha_zero_is_zero_shot_clip(clip_setup, residual, mode):
    model, text, feats, scale = clip_setup
    zs = zero_shot_logits(feats, text, scale)
    head = DACHead(text, scale, residual=residual, text_mod=mode)
    views, labels = _views(d=text.shape[1])
    keys, values = head.build_cache(views, labels, len(CLASSES))
    with torch.no_grad():
        for out in (head(feats), head(feats, keys, values, alpha=0.0, beta=3.0)):
            assert torch.equal(out.argmax(1), zs.argmax(1))
            torch.testing.assert_close(out, zs)
    assert zs.argmax(1).unique().numel() > 1  # the comparison is not trivially a constant prediction


def test_identity_adapter_image_logits_are_the_tip_adapter_formula(clip_setup):
    _, text, feats, scale = clip_setup
    head = DACHead(text, scale)
    views, labels = _views(a=4, n=8, d=text.shape[1])
    alpha, beta = 2.5, 5.5
    keys, values = head.build_cache(views, labels, len(CLASSES))
    # Tip-Adapter (Zhang et al. 2022, Eq. 6), written independently: keys = normalised mean of the views
    k = views.sum(0) / views.shape[0]
    k = k / k.norm(dim=1, keepdim=True)
    expected = torch.zeros(len(feats), len(CLASSES))
    for m in range(len(feats)):
        for i in range(k.shape[0]):
            expected[m, labels[i]] += torch.exp(-beta * (1 - torch.dot(feats[m], k[i])))
    with torch.no_grad():
        torch.testing.assert_close(head.image_logits(feats, keys, values, beta), expected)
        torch.testing.assert_close(head(feats, keys, values, alpha, beta),
                                   zero_shot_logits(feats, text, scale) + alpha * expected)


def test_contrastive_loss_decreases_and_clusters_tighten():
    g = torch.Generator().manual_seed(0)
    d, classes = 16, 3
    centres = torch.randn(classes, d, generator=g)
    labels = torch.arange(60) % classes
    feats = F.normalize(centres[labels] + 1.5 * torch.randn(60, d, generator=g), dim=-1)  # separable, but loose
    adapter = IntraModalAdapter(d)
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    with torch.no_grad():
        loss0 = supervised_contrastive_loss(adapter(feats), labels).item()
        cos0 = mean_intra_class_cosine(adapter(feats), labels).item()
    for _ in range(100):
        loss = supervised_contrastive_loss(adapter(feats), labels, 0.07)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss1 = supervised_contrastive_loss(adapter(feats), labels).item()
        cos1 = mean_intra_class_cosine(adapter(feats), labels).item()
    assert loss1 < loss0 - 0.1
    assert cos1 > cos0 + 0.1


def test_contrastive_loss_ignores_anchors_without_positives():
    f = F.normalize(torch.randn(4, 8), dim=-1)
    assert supervised_contrastive_loss(f, torch.arange(4)).item() == 0.0
    both = supervised_contrastive_loss(f, torch.tensor([0, 0, 1, 2]))
    assert both.item() > 0


def test_adapter_is_identity_at_init_and_learns_in_the_residual_form():
    f = F.normalize(torch.randn(5, 8), dim=-1)
    for residual in (False, True):
        adapter = IntraModalAdapter(8, residual=residual)
        torch.testing.assert_close(adapter(f), f)
        supervised_contrastive_loss(adapter(f), torch.tensor([0, 0, 1, 1, 2])).backward()
        assert adapter.linear.weight.grad.abs().sum() > 0


def test_text_modulation_starts_at_W_and_trains():
    w = F.normalize(torch.randn(3, 8), dim=-1)
    for mode in ("residual", "scale_shift"):
        mod = TextModulation(w, mode=mode)
        torch.testing.assert_close(mod(), w)
        (mod() * torch.randn(3, 8)).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())
    with pytest.raises(ValueError, match="TRAINER.DAC.TEXT_MOD"):
        TextModulation(w, mode="bogus")


@pytest.mark.parametrize("epoch_views,epochs", [("one", 90), ("all", 30)])  # the same number of samples seen
def test_training_on_the_cache_lowers_the_loss_and_fits_the_few_shot_set(epoch_views, epochs):
    g = torch.Generator().manual_seed(1)
    d, classes, k, a = 16, 4, 4, 3
    centres = F.normalize(torch.randn(classes, d, generator=g), dim=-1)
    labels = torch.arange(classes * k) % classes
    views = F.normalize(centres[labels][None] + 0.8 * torch.randn(a, classes * k, d, generator=g), dim=-1)
    text = F.normalize(torch.randn(classes, d, generator=g), dim=-1)  # uninformative text embeddings
    head = DACHead(text, 100.0)
    history = train_on_cache(head, views, labels, epochs=epochs, batch_size=16, lr=5e-2, generator=g,
                             epoch_views=epoch_views)
    assert history[-1] < history[0]
    with torch.no_grad():
        acc = (head(views.mean(0)).argmax(1) == labels).float().mean().item()
    assert acc > 0.9


def test_search_picks_the_best_val_pair_from_val_tensors_only():
    g = torch.Generator().manual_seed(2)
    views, labels = _views(a=2, n=12, d=16, classes=3, seed=3)
    text = F.normalize(torch.randn(3, 16, generator=g), dim=-1)
    head = DACHead(text, 10.0)
    keys, values = head.build_cache(views, labels, 3)
    val = F.normalize(views.mean(0) + 0.3 * torch.randn(12, 16, generator=g), dim=-1)
    val_labels = labels
    alphas, betas = grid((0.0, 5.0, 6), "SEARCH_ALPHA"), grid((0.5, 8.0, 4), "SEARCH_BETA")
    with torch.no_grad():
        tl = head.text_logits(val)
        res = search_alpha_beta(tl, head.adapter(val), keys, values, val_labels, alphas, betas)
        accs = {(a, b): ((tl + a * cache_logits(val, keys, values, b)).argmax(1) == val_labels).float().mean().item()
                for a in alphas.tolist() for b in betas.tolist()}
    assert res.val_accuracy == pytest.approx(100 * max(accs.values()))
    assert accs[(res.alpha, res.beta)] == max(accs.values())
    # a different labelling of the same val features changes the choice's accuracy: it is computed from labels_val
    shuffled = val_labels[torch.randperm(12, generator=g)]
    other = search_alpha_beta(tl, head.adapter(val), keys, values, shuffled, alphas, betas)
    assert other.val_accuracy != res.val_accuracy or other == res


def test_grid_rejects_bad_specs():
    assert grid((0.0, 1.0, 3)).tolist() == [0.0, 0.5, 1.0]
    for bad in ((1.0, 0.0, 3), (0.0, 1.0, 0), (0.0, 1.0)):
        with pytest.raises(ValueError, match="SEARCH_ALPHA"):
            grid(bad, "SEARCH_ALPHA")


def test_class_index_map_and_state_remap_for_a_class_subset():
    source = ["goldfish", "great_white_shark", "Tench", "tiger shark"]
    target = ["tench", "goldfish"]
    assert class_index_map(source, target).tolist() == [2, 0]
    with pytest.raises(KeyError, match="zebra"):
        class_index_map(source, ["zebra", "tench"])
    g = torch.Generator().manual_seed(4)
    w_src = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    src = DACHead(w_src, 10.0, classnames=source)
    with torch.no_grad():
        src.text_mod.delta.normal_()
    idx = class_index_map(source, target)
    tgt = DACHead(w_src[idx], 10.0, classnames=target)
    tgt.load_state_dict(remap_state_dict(src.state_dict(), source, target))
    f = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(tgt.text_logits(f), src.text_logits(f)[:, idx])


def test_class_sum_of_one_hot_values_equals_the_matmul():
    from clip_adapt.dac import class_sum
    from clip_adapt.dac.cache_model import one_hot_labels

    g = torch.Generator().manual_seed(0)
    weights = torch.rand(7, 30, generator=g)
    labels = torch.randint(0, 5, (30,), generator=g)
    one_hot = F.one_hot(labels, 5).float()
    torch.testing.assert_close(class_sum(weights, one_hot), weights @ one_hot)
    remapped = one_hot[:, [4, 1]]  # a class remap: rows of dropped classes become all-zero
    assert (one_hot_labels(remapped) == -1).any()
    torch.testing.assert_close(class_sum(weights, remapped), weights @ remapped)
    soft = torch.rand(30, 5, generator=g)  # not one-hot: the plain matmul
    assert one_hot_labels(soft) is None and one_hot_labels(one_hot + one_hot) is None
    torch.testing.assert_close(class_sum(weights, soft), weights @ soft)


def test_epoch_views_one_sees_each_image_once_per_epoch_as_one_of_its_views():
    """EPOCH_VIEWS "one": N samples per epoch, image i as row a*N + i of the pass-major table for a random pass a;
    "all": A*N samples, the rows themselves; an unknown mode names the key."""
    from clip_adapt.dac import epoch_length, flat_view_index

    n, a = 7, 3
    assert epoch_length(n, a, "one") == n and epoch_length(n, a, "all") == n * a
    with pytest.raises(ValueError, match="TRAINER.DAC.EPOCH_VIEWS"):
        epoch_length(n, a, "some")
    g = torch.Generator().manual_seed(0)
    seen_passes = set()
    for _ in range(20):
        rows = flat_view_index(torch.arange(n), n, a, "one", g)
        assert torch.equal(rows % n, torch.arange(n))  # every image exactly once
        seen_passes |= set((rows // n).tolist())
    assert seen_passes == set(range(a))  # every pass gets drawn
    assert torch.equal(flat_view_index(torch.arange(n * a), n, a, "all"), torch.arange(n * a))
