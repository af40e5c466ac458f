"""DAC core without Dassl: the class_views sampler gives every anchor of the contrastive loss a positive (and the
adapter a gradient at K = 1), and the alpha/beta search breaks ties by its stated rule, not by grid order."""
import pytest
import torch
import torch.nn.functional as F

from clip_adapt.dac import (TIE_RULE, DACHead, anchors_with_a_positive, check_sampler, class_view_batches,
                            epoch_batches, search_alpha_beta, train_on_cache)


def _toy(classes, shots, passes=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(shots)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    views = F.normalize(centres[labels][None] + 0.5 * torch.randn(passes, len(labels), dim, generator=g), dim=-1)
    text = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    return views, labels, text


def _adapter_grad(head, views, labels, rows):
    a, n, d = views.shape
    flat, flat_labels = views.reshape(a * n, d), labels.repeat(a)
    head.zero_grad()
    loss, parts = head.loss(flat[rows], flat_labels[rows])
    loss.backward()
    return head.adapter.linear.weight.grad.norm().item(), parts["loss_con"].item()


def test_at_one_shot_every_anchor_has_a_positive_and_the_adapter_gets_gradient():
    views, labels, text = _toy(classes=10, shots=1)
    g = torch.Generator().manual_seed(0)
    head = DACHead(text, 100.0)
    batches = class_view_batches(labels, 4, batch_size=8, views=2, generator=g)
    assert len(batches) == 3  # ceil(10 images / 4 per batch)
    flat_labels = labels.repeat(4)
    for rows in batches:
        assert anchors_with_a_positive(flat_labels[rows]) == 1.0
        grad, con = _adapter_grad(head, views, labels, rows)
        assert grad > 0 and con > 0
    # the former sampler (one view per image per epoch): no positive pair at K = 1, the adapter gets no gradient
    for rows in epoch_batches(labels, 4, 8, sampler="random", epoch_views="one", generator=g):
        assert anchors_with_a_positive(flat_labels[rows]) == 0.0
        assert _adapter_grad(head, views, labels, rows) == (0.0, 0.0)


def test_an_epoch_shows_each_image_once_as_distinct_views_in_class_groups():
    n_classes, shots, passes, views = 6, 8, 5, 3
    labels = torch.arange(n_classes).repeat_interleave(shots)[torch.randperm(n_classes * shots)]  # any order
    n = len(labels)
    g = torch.Generator().manual_seed(1)
    batches = class_view_batches(labels, passes, batch_size=24, views=views, images_per_class=4, generator=g)
    assert len(batches) == n // 8 and all(len(b) == 24 for b in batches)
    rows = torch.cat(batches)
    images, pass_of = rows % n, rows // n
    assert sorted(images.tolist()) == sorted(list(range(n)) * views)  # each image exactly `views` times
    for i in range(n):
        assert len(set(pass_of[images == i].tolist())) == views  # as distinct passes
    for b in batches:  # 8 images per batch = 2 whole groups of 4 images of a class
        img = (b % n).unique()
        counts = torch.bincount(labels[img], minlength=n_classes)
        assert all(c % 4 == 0 for c in counts.tolist())


def test_at_16_shots_on_many_classes_every_anchor_has_a_positive_where_random_batches_leave_most_without():
    labels = torch.arange(500).repeat_interleave(16)
    g = torch.Generator().manual_seed(2)
    flat_labels = labels.repeat(10)
    ours = [anchors_with_a_positive(flat_labels[r]) for r in class_view_batches(labels, 10, 256, generator=g)]
    assert min(ours) == 1.0
    old = [anchors_with_a_positive(flat_labels[r])
           for r in epoch_batches(labels, 10, 256, sampler="random", generator=g)]
    assert max(old) < 0.5


def test_training_at_one_shot_changes_the_adapter_through_its_loss():
    views, labels, text = _toy(classes=6, shots=1)
    head = DACHead(text, 100.0)
    history = train_on_cache(head, views, labels, epochs=5, batch_size=6, lr=1e-2, weight_decay=0.0,
                             generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(head.adapter.linear.weight, torch.eye(16))
    frozen = DACHead(text, 100.0)  # the former sampler at K = 1: the adapter's loss is 0, it never moves
    train_on_cache(frozen, views, labels, epochs=5, batch_size=6, lr=1e-2, weight_decay=0.0, sampler="random",
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(frozen.adapter.linear.weight, torch.eye(16))
    assert len(history) == 5


@pytest.mark.parametrize("kwargs,key", [(dict(sampler="bogus"), "TRAINER.DAC.SAMPLER"),
                                        (dict(sampler="class_views", views=1), "TRAINER.DAC.VIEWS"),
                                        (dict(sampler="class_views", views=3, n_passes=2), "TRAINER.DAC.AUG_PASSES"),
                                        (dict(sampler="class_views", views=2, batch_size=1), "TRAINER.DAC.BATCH_SIZE"),
                                        (dict(sampler="class_views", images_per_class=-1),
                                         "TRAINER.DAC.IMAGES_PER_CLASS"),
                                        (dict(sampler="random", epoch_views="some"), "TRAINER.DAC.EPOCH_VIEWS")])
def test_bad_sampler_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_sampler(**kwargs)


# ---- the tie rule of the alpha/beta search -----------------------------------------------------------------------
def _separable_val():
    """Two val images, both right for every (alpha, beta): only the cross-entropy tells the pairs apart."""
    text_logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    query = torch.eye(2)
    keys, values = torch.eye(2), torch.eye(2)
    return text_logits, query, keys, values, torch.tensor([0, 1])


def test_equal_accuracy_goes_to_the_lower_val_cross_entropy_not_the_first_grid_pair():
    tl, q, keys, values, labels = _separable_val()
    alphas, betas = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.5, 4.0])
    res = search_alpha_beta(tl, q, keys, values, labels, alphas, betas)
    assert res.val_accuracy == 100.0
    assert (res.alpha, res.beta) == (2.0, 4.0)  # widest margins: lowest CE (grid order would give (0.0, 0.5))
    image = torch.exp(-4.0 * (1.0 - q @ keys.t())) @ values
    assert res.val_cross_entropy == pytest.approx(F.cross_entropy(tl + 2.0 * image, labels).item(), rel=1e-5)


def test_equal_cross_entropy_goes_to_the_smaller_alpha_then_the_smaller_beta_whatever_the_grid_order():
    tl, q, keys, _, labels = _separable_val()
    no_cache = torch.zeros(2, 2)  # image logits are 0: every pair gives the same logits and cross-entropy
    res = search_alpha_beta(tl, q, keys, no_cache, labels, torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5.0, 0.5]))
    assert (res.alpha, res.beta) == (1.0, 0.5)
    assert "cross-entropy" in TIE_RULE and "smaller alpha" in TIE_RULE
