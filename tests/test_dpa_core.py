"""DPA's math (clip_adapt/baselines/dpa.py) against the rules written out in the tests: no Dassl."""
import torch
import torch.nn.functional as F

from clip_adapt.baselines.dpa import BatchMeanHistory, confidence_weight, dpa_loss, fused_pseudo_labels, \
    image_prototypes


def test_image_prototypes_are_class_means_of_the_pseudo_labelled_features_else_text():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(7, 4, generator=g), dim=-1)
    labels = torch.tensor([0, 0, 2, 2, 2, -1, 0])  # class 1 has no image; -1 = never filled
    text = torch.randn(3, 4, generator=g)
    p = image_prototypes(feats, labels, text)
    assert torch.allclose(p[0], F.normalize(feats[[0, 1, 6]].mean(0), dim=0))
    assert torch.allclose(p[2], F.normalize(feats[[2, 3, 4]].mean(0), dim=0))
    assert torch.allclose(p[1], F.normalize(text[1], dim=0))


def test_fused_pseudo_labels_follow_the_rule_written_out():
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    protos = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    text_logits = torch.randn(5, 3, generator=g) * 3
    hist = BatchMeanHistory(2)
    old = F.softmax(torch.randn(5, 3, generator=g), -1)
    hist.update(old)
    labels, weights, parts = fused_pseudo_labels(text_logits, feats, protos, 10.0, hist, a=0.3)
    p_t = F.softmax(text_logits, -1)
    prior = (old.mean(0) + p_t.mean(0)) / 2  # the history holds the old batch and this one
    aligned = p_t / prior
    aligned = aligned / aligned.sum(1, keepdim=True)
    p_i = F.softmax(10.0 * feats @ protos.t(), -1)
    probs = 0.3 * p_i + 0.7 * aligned
    assert torch.equal(labels, probs.argmax(1)) and torch.allclose(parts["probs"], probs)
    w = [p_t[i, labels[i]] / p_t[i].max() * p_i[i, labels[i]] / p_i[i].max() for i in range(5)]
    assert torch.allclose(weights, torch.stack(w), atol=1e-5)
    hist.update(p_t)
    assert len(hist.means) == 2  # the oldest mean dropped


def test_confidence_weight_is_one_at_the_argmax():
    p = F.softmax(torch.randn(4, 6), -1)
    assert torch.allclose(confidence_weight(p, p.argmax(1)), torch.ones(4), atol=1e-5)


def test_alignment_pulls_text_prototypes_and_leaves_image_prototypes_fixed():
    g = torch.Generator().manual_seed(2)
    protos = F.normalize(torch.randn(3, 4, generator=g), dim=-1).requires_grad_(True)
    text = torch.randn(3, 4, generator=g, requires_grad=True)
    strong = torch.randn(5, 3, generator=g, requires_grad=True)
    labels, weights = torch.tensor([0, 1, 2, 0, 1]), torch.ones(5)
    loss, parts = dpa_loss(strong, labels, weights, protos, text, 100.0, 0.0, 1.0)
    loss.backward()
    assert protos.grad is None and text.grad.abs().sum() > 0
    expected = F.cross_entropy(100.0 * protos.detach() @ F.normalize(text, dim=-1).t(), torch.arange(3))
    assert torch.allclose(parts["align"], expected.detach())
    assert torch.allclose(parts["ce"], F.cross_entropy(strong, labels).detach())
