"""Tip-Adapter's math (clip_adapt/baselines/tip_adapter.py): no Dassl, exact identities on random features."""
import torch
import torch.nn.functional as F

from clip_adapt.baselines.tip_adapter import TipAdapterHead, tip_grid, tip_logits
from clip_adapt.zeroshot import zero_shot_logits


def _setup(seed=0, n=12, c=3, d=16, m=7):
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(m, d, generator=g), dim=-1)
    text = F.normalize(torch.randn(c, d, generator=g), dim=-1)
    keys = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    labels = torch.arange(n) % c
    return feats, text, keys, labels, F.one_hot(labels, c).float()


def test_alpha_zero_is_zero_shot_exactly():
    feats, text, keys, _, values = _setup()
    assert torch.equal(tip_logits(feats, text, 100.0, keys, values, alpha=0.0, beta=5.0),
                       zero_shot_logits(feats, text, 100.0))


def test_cache_logits_equal_the_formula_written_out():
    feats, text, keys, labels, values = _setup(seed=1)
    alpha, beta = 2.5, 3.0
    expected = torch.zeros(feats.shape[0], text.shape[0])
    for i in range(feats.shape[0]):  # exp(-beta (1 - f . k_j)) summed into the class of key j
        for j in range(keys.shape[0]):
            expected[i, labels[j]] += torch.exp(-beta * (1 - feats[i] @ keys[j]))
    expected = 100.0 * feats @ text.t() + alpha * expected
    assert torch.allclose(tip_logits(feats, text, 100.0, keys, values, alpha, beta), expected, atol=1e-5)


def test_grid_is_tip_adapters_search_list():
    # Tip-Adapter's list for scale s and n steps: 0.1, 0.1 + (s - 0.1)/n, ..., without s itself
    assert torch.allclose(tip_grid(7, 4), torch.tensor([0.1, 1.825, 3.55, 5.275], dtype=torch.float64))
    assert tip_grid(13, 200).shape == (200,) and tip_grid(13, 200)[0] == 0.1 and tip_grid(13, 200).max() < 13


def test_grid_rejects_bad_values_naming_the_key():
    import pytest

    with pytest.raises(ValueError, match="SEARCH_STEP"):
        tip_grid(7, 0, "TRAINER.TIPADAPTER.SEARCH_SCALE/SEARCH_STEP")


def test_fine_tuned_keys_start_at_the_features_and_move_after_a_step():
    feats, text, keys, labels, values = _setup(seed=2)
    head = TipAdapterHead(text, 100.0, torch.zeros_like(keys), values, train_keys=True)
    head.reset_keys(keys)
    assert torch.equal(head.keys.detach(), keys)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    loss = head.loss(feats, labels[: feats.shape[0]], alpha=1.0, beta=1.0)
    loss.backward()
    assert head.keys.grad is not None and head.keys.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(head.keys.detach(), keys)
    assert [n for n, p in head.named_parameters()] == ["keys"]  # W and L stay fixed


def test_training_free_head_has_no_parameters_and_saves_keys_and_values():
    feats, text, keys, _, values = _setup(seed=3)
    head = TipAdapterHead(text, 100.0, keys, values, train_keys=False)
    assert list(head.parameters()) == []
    assert set(head.state_dict()) == {"keys", "values"}
    assert torch.equal(head(feats, 1.5, 2.0), tip_logits(feats, text, 100.0, keys, values, 1.5, 2.0))
