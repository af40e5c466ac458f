"""The official ReCLIP recipe against the official code's equations (github.com/michiganleon/ReCLIP_WACV, reclip.py
and models.py), written out here: ReCLIP-V's loss mean(CE * m) / sum(m), ReCLIP-T's sum(CE * m) / sum(m),
torch SGD (momentum 0.9, weight decay) on the norm parameters, centroids over every node a class receives."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from clip_adapt.reclip import (OFFICIAL_RECIPE, agreement_cross_entropy, label_propagation, project,
                               projection_basis, pseudo_label_round, recipe_name)
from tests.conftest import register_fixture_dataset

OFFICIAL_CFG = "configs/trainers/ReCLIP/vit_b16_official.yaml"
OURS_CFG = "configs/trainers/ReCLIP/vit_b16.yaml"


# ---- core -------------------------------------------------------------------------------------------------


def test_official_loss_is_the_masked_mean_divided_by_the_batch_size_again():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    mask = torch.tensor([True, False, True, True, False, False])
    ce = F.cross_entropy(logits, labels, reduction="none")
    official_v = torch.mean(ce * mask) / torch.sum(mask)  # reclip.py, ReCLIP-V
    official_t = torch.sum(ce * mask) / torch.sum(mask)  # reclip.py, ReCLIP-T
    torch.testing.assert_close(agreement_cross_entropy(logits, labels, mask, loss_scale="official"), official_v)
    torch.testing.assert_close(agreement_cross_entropy(logits, labels, mask), official_t)
    # only the agreed rows passed in, the batch size given: the same number (the trainer's way)
    torch.testing.assert_close(agreement_cross_entropy(logits[mask], labels[mask], torch.ones(3, dtype=torch.bool),
                                                       loss_scale="official", batch_size=6), official_v)
    with pytest.raises(ValueError, match="LOSS_SCALE"):
        agreement_cross_entropy(logits, labels, mask, loss_scale="sum")


def test_node_centroids_average_every_node_assigned_to_the_class_as_the_official_code():
    torch.manual_seed(0)
    num_classes, dim = 3, 8
    anchors = F.normalize(torch.randn(num_classes, dim), dim=-1)
    feats = F.normalize(anchors.repeat_interleave(5, 0) + 0.6 * torch.randn(15, dim), dim=-1)
    r = pseudo_label_round(feats, feats, anchors, anchors, k=4, centroids="nodes")
    # the official rule: propagate over [anchors; features], every node predicted c (anchors included) averaged
    basis = projection_basis(anchors)
    prop = label_propagation(project(feats, basis), project(anchors, basis), k=4)
    nodes = torch.cat([anchors, feats])
    pred = torch.cat([prop.anchor_scores.argmax(1), prop.labels])
    expected = torch.stack([F.normalize(nodes[pred == c].mean(0), dim=0) for c in range(num_classes)])
    torch.testing.assert_close(r.centroids, expected)
    images_only = pseudo_label_round(feats, feats, anchors, anchors, k=4, centroids="images").centroids
    assert not torch.allclose(images_only, expected)  # the anchors move the centroids
    with pytest.raises(ValueError, match="CENTROIDS"):
        pseudo_label_round(feats, feats, anchors, anchors, k=4, centroids="all")


def test_recipe_names():
    assert recipe_name(OFFICIAL_RECIPE) == "official"
    ours = dict(OFFICIAL_RECIPE, LOSS_SCALE="mean", CENTROIDS="images")
    assert recipe_name(ours) == "ours" and recipe_name(dict(ours, TEMPLATES="ensemble")) == "ours"
    assert recipe_name(dict(OFFICIAL_RECIPE, CENTROIDS="images")) == "mixed"


# ---- one training step of the Dassl trainer vs the official update, written out ------------------------------


@pytest.fixture
def build(tmp_path, dassl_cfg):
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401  registers the trainers

    register_fixture_dataset(tmp_path / "images", "ReCLIPOfficialFixture", n_train=12, n_val=3, n_test=24)

    def _build(yaml, out, *opts):
        cfg = dassl_cfg(yaml, "TRAINER.NAME", "ReCLIP", "DATASET.NAME", "ReCLIPOfficialFixture",
                        "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "OUTPUT_DIR", str(tmp_path / out),
                        "TRAINER.RECLIP.KNN", "5", "TRAINER.RECLIP.CHUNK", "16", "OPTIM.LR", "0.5",
                        "TRAINER.RECLIP.TEXT_LR", "0.3", "OPTIM.WEIGHT_DECAY", "0.01", *opts)
        torch.manual_seed(1)
        return build_trainer(cfg)

    return _build


def _sgd_first_step(params, grads, lr, wd):
    """torch.optim.SGD's first step with momentum (buffer = d_p), dampening 0: p - lr * (g + wd * p)."""
    return [p.detach() - lr * (g + wd * p.detach()) for p, g in zip(params, grads)]


def _official_step(trainer, batch, labels_v, labels_t):
    """The official training step on copies of the two branches: both forwards on the whole batch, the masked
    losses of reclip.py, one SGD step each. Returns the expected parameters of each branch."""
    cfg = trainer.cfg
    v, t = copy.deepcopy(trainer.branch_v), copy.deepcopy(trainer.branch_t)
    images = batch["img"]
    mask = (labels_v == labels_t).float()
    scale = v.clip.logit_scale.exp().float()
    v_logits = scale * F.normalize(v.clip.encode_image(images).float(), dim=-1) @ F.normalize(v.classifier, dim=-1).t()
    with torch.no_grad():
        image_t = F.normalize(t.clip.encode_image(images).float(), dim=-1)
    text = F.normalize(t.clip.encode_text(t.tokens).float(), dim=-1)
    t_logits = scale * image_t @ text.t()
    ce_v = F.cross_entropy(v_logits, labels_v, reduction="none")
    ce_t = F.cross_entropy(t_logits, labels_t, reduction="none")
    if cfg.TRAINER.RECLIP.LOSS_SCALE == "official":
        loss_v = torch.mean(ce_v * mask) / torch.sum(mask)
    else:
        loss_v = torch.sum(ce_v * mask) / torch.sum(mask)
    loss_t = torch.sum(ce_t * mask) / torch.sum(mask)
    pv = [p for p in v.parameters() if p.requires_grad]
    pt = [p for p in t.parameters() if p.requires_grad]
    wd = cfg.OPTIM.WEIGHT_DECAY
    return (_sgd_first_step(pv, torch.autograd.grad(loss_v, pv), cfg.OPTIM.LR, wd),
            _sgd_first_step(pt, torch.autograd.grad(loss_t, pt), cfg.TRAINER.RECLIP.TEXT_LR, wd))


def _one_step(trainer):
    """Pseudo-labels for the epoch, then forced labels on one batch (some agree, some not), one trainer step."""
    trainer.before_epoch()
    batch = next(iter(trainer.train_loader_x))
    index = batch["index"]
    n, c = trainer.round.labels_v.numel(), trainer.num_classes
    labels_v = torch.arange(n) % c
    labels_t = labels_v.clone()
    labels_t[index[::3]] = (labels_v[index[::3]] + 1) % c  # every third sample of the batch disagrees
    trainer.round.labels_v, trainer.round.labels_t = labels_v, labels_t
    expected = _official_step(trainer, batch, labels_v[index], labels_t[index])
    trainer.set_model_mode("train")
    trainer.forward_backward(batch)
    got = ([p.detach() for p in trainer.branch_v.parameters() if p.requires_grad],
           [p.detach() for p in trainer.branch_t.parameters() if p.requires_grad])
    return expected, got


@pytest.mark.dassl
@pytest.mark.parametrize("yaml", [OFFICIAL_CFG, OURS_CFG])
def test_one_step_equals_the_official_update_written_out(build, yaml):
    trainer = build(yaml, "out", "TRAINER.RECLIP.AUTO_EPOCHS", "False", "OPTIM.MAX_EPOCH", "1")
    before_v = [p.detach().clone() for p in trainer.branch_v.parameters() if p.requires_grad]
    (exp_v, exp_t), (got_v, got_t) = _one_step(trainer)
    for e, g in zip(exp_v + exp_t, got_v + got_t):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    moved = sum((g - b).abs().sum().item() for g, b in zip(got_v, before_v))
    assert moved > 0


@pytest.mark.dassl
def test_official_and_ours_visual_updates_differ_by_the_batch_size(build):
    """The gradient part of ReCLIP-V's step is B times smaller under the official loss (B = 8 here)."""
    steps = {}
    for yaml in (OFFICIAL_CFG, OURS_CFG):
        trainer = build(yaml, yaml.split("/")[-1], "TRAINER.RECLIP.AUTO_EPOCHS", "False", "OPTIM.MAX_EPOCH", "1",
                        "OPTIM.WEIGHT_DECAY", "0.0", "TRAINER.RECLIP.CENTROIDS", "images")
        before = [p.detach().clone() for p in trainer.branch_v.parameters() if p.requires_grad]
        _, (got_v, _) = _one_step(trainer)
        steps[yaml] = torch.cat([(g - b).flatten() for g, b in zip(got_v, before)])
    # p_new - p loses a few ulps of p (|p| ~ 1): compare to that precision, and the norms' ratio
    torch.testing.assert_close(steps[OFFICIAL_CFG] * 8, steps[OURS_CFG], rtol=1e-4, atol=2e-6)
    assert steps[OURS_CFG].norm().item() / steps[OFFICIAL_CFG].norm().item() == pytest.approx(8, rel=1e-3)


@pytest.mark.dassl
def test_official_config_trains_on_the_first_clip_template_and_labels_results(build, tmp_path):
    trainer = build(OFFICIAL_CFG, "run", "TRAINER.RECLIP.AUTO_EPOCHS", "False", "OPTIM.MAX_EPOCH", "1")
    rc = trainer.cfg.TRAINER.RECLIP
    assert (rc.TEMPLATES, rc.TEXT_TEMPLATE, rc.LOSS_SCALE, rc.CENTROIDS) == ("clip", "first", "official", "nodes")
    assert trainer.recipe == "official"
    trainer.train()
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["recipe"] == "official" and res["templates"] == "clip" and res["reclip_loss_scale"] == "official"
    assert res["reclip_centroids"] == "nodes" and res["reclip_text_template"] == "first"


@pytest.mark.dassl
def test_official_recipe_end_to_end_on_a_clip_dataset(dassl_cfg, tmp_path, capsys):
    """vit_b16_official.yaml on a fixture EuroSAT (CLIP's list: 3 templates, its 10 class names): ReCLIP-T's
    prompts are the first template filled with CLIP's names; a full run writes results.json with the recipe."""
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401
    from clip_adapt.clip_prompt_lists import CLIP_PROMPTS
    from tests.dataset_fixtures import build_fixture_dataset

    build_fixture_dataset(tmp_path / "data", "eurosat", n_classes=10, n_train=1, n_val=1, n_test=2)
    cfg = dassl_cfg(OFFICIAL_CFG, "TRAINER.NAME", "ReCLIP", "DATASET.NAME", "EuroSAT",
                    "DATASET.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(tmp_path / "out"),
                    "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "TRAINER.RECLIP.KNN", "5")
    trainer = build_trainer(cfg)
    names = CLIP_PROMPTS["eurosat"]["classes"]
    assert trainer.prompts.classnames == names and trainer.branch_t.classnames == names
    first = CLIP_PROMPTS["eurosat"]["templates"][0]
    import clip
    torch.testing.assert_close(trainer.branch_t.tokens, clip.tokenize([first.format(c) for c in names]))
    trainer.train()
    assert trainer.max_epoch == 2  # min(100, int(20 / 5000 + 2))
    assert "ReCLIP recipe: official" in capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["recipe"] == "official" and res["templates"] == "clip" and 0.0 <= res["accuracy"] <= 100.0


@pytest.mark.dassl
@pytest.mark.parametrize("key,value", [("LOSS_SCALE", "sum"), ("CENTROIDS", "all"), ("TEXT_TEMPLATE", "last"),
                                       ("TEMPLATES", "many")])
def test_bad_recipe_values_name_the_key(build, key, value):
    with pytest.raises(ValueError, match=f"TRAINER.RECLIP.{key}"):
        build(OFFICIAL_CFG, "bad", f"TRAINER.RECLIP.{key}", value)
