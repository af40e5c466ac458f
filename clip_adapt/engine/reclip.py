"""ReCLIP (Hu et al., WACV 2024) as a Dassl trainer: thin wiring of clip_adapt/reclip (methods/RECLIP.md).

Per epoch (RECLIP.md, part 5): a no-grad pass over the adaptation split collects ReCLIP-V's image features (and,
once per run, the frozen encoder's features, which ReCLIP-T uses); labels are propagated for each branch in its
own projection space; ReCLIP-V's classifier becomes the centroids of its assignment; then each branch trains with
cross-entropy on the samples where both branches' pseudo-labels agree.
Inference averages the two branches' logits (part 6); the last epoch is reported (no selection on test labels).

Recipes (docs/RECLIP.md; results.json records `recipe` and each key):
- official (configs/trainers/ReCLIP/*_official.yaml): the official code's training math. TEMPLATES clip (CLIP's
  per-dataset prompts and class names), TEXT_TEMPLATE first (ReCLIP-T trains on the list's first template),
  LOSS_SCALE official (ReCLIP-V's mean loss divided by the batch size a second time), CENTROIDS nodes (the anchors
  averaged into ReCLIP-V's centroids).
- ours (the other configs, the key defaults): LOSS_SCALE mean (both branches average over agreed samples) and
  CENTROIDS images (image features only).

Choices where the spec is silent or where we differ from the official code (docs/RECLIP.md):
- DATASET.ADAPT_SPLIT: "test" (default, transductive, the paper's protocol) or "train" (inductive: adapt on the
  unlabelled train split, evaluate on test). The adaptation split's labels are read only for a diagnostic log
  line (pseudo-label accuracy); they never reach a loss.
- Adaptation batches use the test transform (CLIP preprocessing, no augmentation), DATALOADER.TRAIN_X.BATCH_SIZE.
- ReCLIP-T's image features come from the frozen encoder, so they are computed once and looked up by index at
  each step instead of re-encoding the batch (same numbers, one image forward less per step); disagreeing
  samples contribute no gradient, so only the agreed images of a batch go through ReCLIP-V.
- ReCLIP-T's training classifier uses one template (TRAINER.RECLIP.TEXT_TEMPLATE: the first of TEMPLATES, or
  the dataset's single template); TEMPLATES gives its anchors and projection; ReCLIP-V's anchors and projection
  are the frozen template-ensemble text embeddings.
- A step where no sample agrees is skipped (as in the official code), so weight decay does not act alone.
- Logits use CLIP's own logit scale (100 for the released models; the official code hard-codes 100).
- Epochs: min(100, N/5000 + 2) with TRAINER.RECLIP.AUTO_EPOCHS, else OPTIM.MAX_EPOCH.
"""
import copy

import torch
from dassl.engine import TRAINER_REGISTRY
from tqdm import tqdm

from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from clip_adapt import distributed
from clip_adapt.distributed import GlobalBatchSampler
from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.prompts import get_prompt_set, get_templates
from clip_adapt.reclip import (CENTROID_RULES, LOSS_SCALES, OFFICIAL_RECIPE, TEXT_TEMPLATE_RULES, ReCLIPText,
                               ReCLIPVisual, agreement_cross_entropy, auto_epochs, pseudo_label_round, recipe_name)
from clip_adapt.reclip.self_training import PseudoLabelRound
from clip_adapt.templates import check_set
from clip_adapt.text import class_embeddings

ADAPT_SPLITS = ("test", "train")
DEFAULT_ADAPT_SPLIT = "test"


class _EmptySafeCollate:
    """Dassl's batches; an empty one (a process's share of a small last batch) as 0 images of INPUT.SIZE."""

    def __init__(self, size):
        self.size = tuple(size)

    def __call__(self, items):
        if not items:
            return {"img": torch.zeros((0, 3) + self.size), "index": torch.zeros(0, dtype=torch.long),
                    "label": torch.zeros(0, dtype=torch.long)}
        return default_collate(items)


@TRAINER_REGISTRY.register()
class ReCLIP(CLIPAdaptTrainer):
    """ReCLIP-V (visual norms) and ReCLIP-T (text norms) trained by cross-modality self-training."""

    # ---- data ---------------------------------------------------------------------------------------------
    def check_cfg(self, cfg):
        split = cfg.DATASET.ADAPT_SPLIT or DEFAULT_ADAPT_SPLIT
        if split not in ADAPT_SPLITS:
            raise ValueError(f"DATASET.ADAPT_SPLIT must be one of {ADAPT_SPLITS} or '' (= {DEFAULT_ADAPT_SPLIT}) "
                             f"for ReCLIP, got {cfg.DATASET.ADAPT_SPLIT!r}")
        rc = cfg.TRAINER.RECLIP
        check_set(rc.TEMPLATES, "TRAINER.RECLIP.TEMPLATES")
        for key, allowed in (("TEXT_TEMPLATE", TEXT_TEMPLATE_RULES), ("LOSS_SCALE", LOSS_SCALES),
                             ("CENTROIDS", CENTROID_RULES)):
            if rc[key] not in allowed:
                raise ValueError(f"TRAINER.RECLIP.{key} must be one of {allowed}, got {rc[key]!r}")

    @property
    def adapt_split(self):
        return self.cfg.DATASET.ADAPT_SPLIT or DEFAULT_ADAPT_SPLIT

    def build_data_loader(self):
        """Dassl's loaders, then the adaptation split's: shuffled for training, in order for the feature pass."""
        super().build_data_loader()
        cfg = self.cfg
        dataset = self.dm.dataset
        self.adapt_source = dataset.test if self.adapt_split == "test" else dataset.train_x
        tfm = self.test_loader.dataset.transform  # CLIP preprocessing, no augmentation
        # global batches seeded by (SEED, epoch), split over the processes (clip_adapt/distributed.py); the last
        # one may be partial, and a process whose share of it is empty gets an empty batch
        base = self.make_loader(self.adapt_source, "SequentialSampler", cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm)
        sampler = GlobalBatchSampler(len(self.adapt_source), cfg.DATALOADER.TRAIN_X.BATCH_SIZE, seed=cfg.SEED,
                                     drop_last=False)
        self.train_loader_x = DataLoader(base.dataset, batch_sampler=sampler, num_workers=base.num_workers,
                                         pin_memory=base.pin_memory, collate_fn=_EmptySafeCollate(cfg.INPUT.SIZE))
        self.adapt_loader = self.make_loader(self.adapt_source, "SequentialSampler", cfg.DATALOADER.TEST.BATCH_SIZE,
                                             tfm)
        print(f"ReCLIP adapts on the unlabelled {self.adapt_split} split ({len(self.adapt_source)} images; "
              f"{'transductive' if self.adapt_split == 'test' else 'inductive'})")

    # ---- model --------------------------------------------------------------------------------------------
    def build_model(self):
        cfg, rc = self.cfg, self.cfg.TRAINER.RECLIP
        if rc.AUTO_EPOCHS:
            self.max_epoch = auto_epochs(len(self.adapt_source))
        print(f"ReCLIP: {self.max_epoch} epochs "
              f"({'min(100, N/5000 + 2)' if rc.AUTO_EPOCHS else 'OPTIM.MAX_EPOCH'})")
        clip_v = self.build_clip()
        clip_t = copy.deepcopy(clip_v)
        self.prompts = get_prompt_set(self.dataset_short, rc.TEMPLATES, self.classnames)
        templates, names = self.prompts.templates, self.prompts.classnames
        # frozen template-ensemble embeddings: ReCLIP-V's classifier at epoch 0, its anchors and projection
        self.text_anchors = class_embeddings(clip_v, names, templates, cache=self.feature_cache,
                                             backbone_id=self.backbone_id).to(self.device)
        single = templates[0] if rc.TEXT_TEMPLATE == "first" else get_templates(self.dataset_short, "single")[0]
        self.branch_v = ReCLIPVisual(clip_v, self.text_anchors)
        self.branch_t = ReCLIPText(clip_t, names, single, templates).to(self.device)
        self.branch_v.to(self.device)
        self.register_trainable("reclip_v", self.branch_v, save="trainable")
        text_optim = cfg.OPTIM.clone()
        text_optim.defrost()
        text_optim.LR = rc.TEXT_LR
        self.register_trainable("reclip_t", self.branch_t, optim_cfg=text_optim, save="trainable")
        n_v = sum(p.numel() for p in self.branch_v.parameters() if p.requires_grad)
        n_t = sum(p.numel() for p in self.branch_t.parameters() if p.requires_grad)
        print(f"ReCLIP-V trains {n_v:,} visual norm parameters; ReCLIP-T trains {n_t:,} text norm parameters "
              f"(template {single!r}; anchors from {len(templates)} {self.prompts.name} templates: "
              f"{self.prompts.source})")
        print(f"ReCLIP recipe: {self.recipe} (LOSS_SCALE {rc.LOSS_SCALE}, CENTROIDS {rc.CENTROIDS}, "
              f"TEXT_TEMPLATE {rc.TEXT_TEMPLATE}, TEMPLATES {rc.TEMPLATES})")
        self.round = None  # this epoch's PseudoLabelRound
        self.frozen_features = None  # N x D, the frozen visual encoder's features of the adaptation split
        self._eval_text = None

    # ---- per-epoch pseudo-labels --------------------------------------------------------------------------
    @torch.no_grad()
    def _feature_pass(self, encode, desc):
        """Features of the adaptation split, in order; data-parallel, each process encodes every N-th batch and the
        features are gathered (distributed.shard_batches / gather_batches). It leaves the global RNG untouched (a
        DataLoader iterator draws a seed from it), so a resumed run, which also recomputes the frozen features,
        shuffles alike."""
        feats, labels = [], []
        with torch.random.fork_rng(devices=[]):
            for batch in tqdm(distributed.shard_batches(self.adapt_loader), desc=desc, leave=False):
                with self.autocast():
                    feats.append(encode(batch["img"].to(self.device)).float())
                labels.append(batch["label"])
        feats, labels = distributed.gather_batches(feats, labels)
        return torch.cat(feats).to(self.device), torch.cat(labels).to(self.device)

    def before_epoch(self):
        """The no-grad pass, label propagation for both branches, ReCLIP-V's new classifier (RECLIP.md, 5)."""
        rc = self.cfg.TRAINER.RECLIP
        self.set_model_mode("eval")
        tag = f"epoch {self.epoch + 1}/{self.max_epoch}"
        if self.frozen_features is None:
            self.frozen_features, _ = self._feature_pass(self.branch_t.encode_frozen_images,
                                                         f"{tag}: frozen image features")
        feats_v, labels = self._feature_pass(self.branch_v.encode_images, f"{tag}: ReCLIP-V image features")
        anchors_t = self.branch_t.anchor_embeddings()
        round_ = None
        if distributed.is_main():  # one propagation (rank 0); its labels and centroids go to every process
            round_ = pseudo_label_round(feats_v, self.frozen_features, self.text_anchors, anchors_t, rank=rc.RANK,
                                        k=rc.KNN, alpha=rc.ALPHA, cg_iters=rc.CG_ITERS, chunk=rc.CHUNK,
                                        progress=True, centroids=rc.CENTROIDS)
            if distributed.world_size() > 1:
                round_ = PseudoLabelRound(labels_v=round_.labels_v.cpu(), labels_t=round_.labels_t.cpu(),
                                          centroids=round_.centroids.cpu())
        round_ = distributed.broadcast_from_main(round_)
        self.round = PseudoLabelRound(labels_v=round_.labels_v.to(self.device), labels_t=round_.labels_t.to(
            self.device), centroids=round_.centroids.to(self.device))
        self.branch_v.set_classifier(self.round.centroids)
        self._eval_text = None
        self._log_round(labels, tag)

    def _log_round(self, labels, tag):
        """Diagnostic only: the adaptation split's labels never reach a loss."""
        r = self.round
        agree = r.agree

        def acc(pred, where=None):
            hits = pred == labels
            hits = hits if where is None else hits[where]
            return 100.0 * hits.float().mean().item() if hits.numel() else 0.0

        print(f"{tag}: pseudo-label accuracy (diagnostic) ReCLIP-V {acc(r.labels_v):.2f}% ReCLIP-T "
              f"{acc(r.labels_t):.2f}% | agreement {100.0 * agree.float().mean().item():.2f}% "
              f"(accuracy on agreed {acc(r.labels_v, agree):.2f}%)")
        self.write_scalar("reclip/agreement", agree.float().mean().item(), self.epoch)

    # ---- training step ------------------------------------------------------------------------------------
    def forward_backward(self, batch):
        """Cross-entropy on agreed samples for both branches (RECLIP.md, part 5); ReCLIP-V's loss is scaled by
        TRAINER.RECLIP.LOSS_SCALE (official: divided by the batch size, all samples of the batch counted)."""
        index = batch["index"].to(self.device)
        labels_v, labels_t = self.round.labels_v[index], self.round.labels_t[index]
        agreed = (labels_v == labels_t).nonzero().squeeze(1)
        self._eval_text = None
        # data-parallel: counts and losses are the global batch's (its agreed samples gathered in rank order)
        counts = distributed.all_reduce_sum(torch.tensor([agreed.numel(), index.numel()], device=self.device))
        n_agreed, n_batch = int(counts[0]), int(counts[1])
        summary = {"agree": n_agreed / max(n_batch, 1)}
        if n_agreed == 0:  # nothing to learn from: skip the step (official code)
            return summary
        gather = distributed.gather_batch
        ones = torch.ones(n_agreed, dtype=torch.bool, device=self.device)
        with self.autocast():
            loss_v = agreement_cross_entropy(gather(self._local_logits(self.branch_v, batch["img"], agreed)),
                                             gather(labels_v[agreed]), ones,
                                             loss_scale=self.cfg.TRAINER.RECLIP.LOSS_SCALE, batch_size=n_batch)
        self.model_backward_and_update(loss_v, "reclip_v")
        with self.autocast():
            logits_t = self._local_logits(self.branch_t.logits, self.frozen_features, index[agreed])
            loss_t = agreement_cross_entropy(gather(logits_t), gather(labels_t[agreed]), ones)
        self.model_backward_and_update(loss_t, "reclip_t")
        summary.update(loss_v=loss_v.item(), loss_t=loss_t.item())
        return summary

    def _local_logits(self, branch, inputs, rows):
        """branch(inputs[rows]) as float; an empty C-column tensor when this process has no agreed sample in its
        shard (data-parallel) -- it then contributes no gradient, as such samples do in a 1-process step."""
        if rows.numel() == 0:
            return torch.zeros(0, len(self.classnames), device=self.device)
        return branch(inputs.to(self.device)[rows]).float()

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def model_inference(self, images):
        """The average of ReCLIP-V's and ReCLIP-T's logits (RECLIP.md, part 6)."""
        if self._eval_text is None:
            with self.autocast():
                self._eval_text = self.branch_t.class_embeddings()
        with self.autocast():
            logits_v = self.branch_v(images)
            logits_t = self.branch_t.logits(self.branch_t.encode_frozen_images(images), self._eval_text)
        return 0.5 * (logits_v.float() + logits_t.float())

    # ---- results -------------------------------------------------------------------------------------------
    @property
    def recipe(self):
        return recipe_name(self.cfg.TRAINER.RECLIP)

    def write_results(self, **extra):
        """results.json, with the template set and the recipe (official | ours | mixed) and its keys."""
        rc = self.cfg.TRAINER.RECLIP
        super().write_results(templates=rc.TEMPLATES, recipe=self.recipe,
                              **{f"reclip_{k.lower()}": rc[k] for k in OFFICIAL_RECIPE if k != "TEMPLATES"}, **extra)

    # ---- resume -------------------------------------------------------------------------------------------
    def extra_state(self):
        state = {"classifier_v": self.branch_v.classifier.detach().cpu()}
        if self.round is not None:
            state.update(labels_v=self.round.labels_v.cpu(), labels_t=self.round.labels_t.cpu(),
                         centroids=self.round.centroids.cpu())
        return state

    def load_extra_state(self, state):
        if "classifier_v" in state:
            self.branch_v.set_classifier(state["classifier_v"].to(self.device))
        if "labels_v" in state:
            self.round = PseudoLabelRound(labels_v=state["labels_v"].to(self.device),
                                          labels_t=state["labels_t"].to(self.device),
                                          centroids=state["centroids"].to(self.device))
        self._eval_text = None
