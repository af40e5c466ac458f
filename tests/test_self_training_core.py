"""Thresholded pseudo-label self-training (clip_adapt/baselines/self_training.py): no Dassl."""
import torch
import torch.nn.functional as F

from clip_adapt.baselines.self_training import NormTunedCLIP, self_training_loss, thresholded_pseudo_labels


def test_samples_under_the_threshold_are_ignored_and_get_no_gradient():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.2, 0.1]])
    labels, mask, conf = thresholded_pseudo_labels(weak, threshold=0.7)
    assert labels.tolist() == [0, 0, 2, 1] and mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert torch.allclose(conf, F.softmax(weak, -1).max(-1).values)
    strong = torch.randn(4, 3, requires_grad=True)
    loss = self_training_loss(strong, labels, mask)
    loss.backward()
    assert strong.grad[1].abs().sum() == 0 and strong.grad[3].abs().sum() == 0
    assert strong.grad[0].abs().sum() > 0 and strong.grad[2].abs().sum() > 0
    # the masked mean over the whole batch (FixMatch's form), written out
    ce = [F.cross_entropy(strong[i:i + 1], labels[i:i + 1]) for i in (0, 2)]
    assert torch.allclose(loss, (ce[0] + ce[1]) / 4)


def test_threshold_zero_keeps_every_sample_and_one_keeps_only_certain_ones():
    weak = torch.randn(6, 5)
    assert thresholded_pseudo_labels(weak, 0.0)[1].sum() == 6
    assert thresholded_pseudo_labels(weak, 1.0)[1].sum() == 0


def test_only_visual_norm_layers_train(tiny_clip_path):
    from clip_adapt.clip_loader import load_clip

    model = load_clip(tiny_clip_path, device=torch.device("cpu"), precision="fp32")
    text = F.normalize(torch.randn(3, model.text_projection.shape[1]), dim=-1)
    st = NormTunedCLIP(model.visual, text, 100.0)
    names = [n for n, p in st.named_parameters() if p.requires_grad]
    assert names and all(".ln_" in n or n.startswith("visual.ln_") for n in names)
    assert "classifier" not in names
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(st(x), 100.0 * F.normalize(model.visual(x), dim=-1) @ text.t(), atol=1e-4)
    assert torch.allclose(st.class_weights(), text, atol=1e-6)


def test_selected_mean_divides_by_the_selected_samples_only():
    strong = torch.randn(4, 3)
    labels, mask = torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    ce = F.cross_entropy(strong, labels, reduction="none")
    assert torch.allclose(self_training_loss(strong, labels, mask, "selected"), (ce[0] + ce[2]) / 2)
    assert self_training_loss(strong, labels, torch.zeros(4), "selected") == 0


def test_ema_update_moves_only_the_named_parameters_by_the_momentum():
    from clip_adapt.baselines.self_training import ema_update

    teacher, student = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    t_w, t_b, s_w = teacher.weight.detach().clone(), teacher.bias.detach().clone(), student.weight.detach().clone()
    ema_update(teacher, student, 0.9, {"weight"})
    assert torch.allclose(teacher.weight, 0.9 * t_w + 0.1 * s_w)
    assert torch.equal(teacher.bias.detach(), t_b)
