"""FAIR (Ali et al., WACV 2026) as a Dassl trainer: thin wiring of clip_adapt/fair (methods/FAIR.md).

Build: class descriptions (provider, part 1) -> CDA from their text embeddings and per-description weights from the
class-name (template-ensemble) embeddings (part 2); the text encoder is dropped afterwards. Trainable: the visual
norm layers' affine parameters + CDA (part 8). Each step (parts 3-7): weak view + N crops in one no-grad encoder
call -> zero-shot and LAS scores -> fused pseudo-labels with ambiguity-aware weights; strong view with gradient ->
fused student logits -> weighted CE + fairness term. Inference: the student's fused score (part 9); the last
epoch is reported.

Unsupervised: the adaptation split is read through `TwoViewDataset`, which is given image paths only, so batches
carry no label. The split's labels are read in `after_epoch` for ONE diagnostic log line (pseudo-label accuracy)
and never reach a loss.

Choices where the spec is silent (docs/FAIR.md):
- DATASET.ADAPT_SPLIT: "train" (default, the spec's setting) or "test" (transductive; runs go to
  <cfg>_transductive).
- Crops are cut from the full-resolution image in the loader's workers (crops.RandomSquareCrops, as WCA does), and
  only the input-size crops reach the device. With TEST_CROPS the test loader yields them too (CropTestDataset).
- Class descriptions must be found (DESCRIPTIONS_FALLBACK "error"); template sentences only when asked for
  ("template"; scripts/fair/main.sh then names the run <cfg>_templatedesc); results.json records the source.
- The student's LAS on the strong view uses its global feature as the only "crop" (as at inference without
  TEST_CROPS), so a step costs N + 2 encoder passes and one backward.
- Zero-shot scores (teacher and student) use the current encoder with the class-name template-ensemble
  embeddings (TRAINER.FAIR.TEMPLATES); the classifier is frozen unless TRAINER.FAIR.TRAIN_CLASSIFIER.
- ResNet backbones have no LayerNorm: their BatchNorm affine parameters train instead (statistics frozen).
- Weight decay applies to parameters with >= 2 dimensions (CDA, a trainable classifier), not to norm parameters.
- The fairness term is reported as -mean_c log p_bar_c - log C (same gradient, 0 when balanced).
- amp on CUDA uses a GradScaler; fp16 keeps the trainable norm parameters in fp32.
"""
import torch
from dassl.engine import TRAINER_REGISTRY
from torch.utils.data import DataLoader

from clip_adapt import distributed
from clip_adapt.distributed import GlobalBatchSampler, SeededItems
from clip_adapt.engine.base import CLIPAdaptTrainer, default_feature_cache_dir
from clip_adapt.fair import (ClassDescriptionAnchors, CropTestDataset, FAIRConfigError, FAIRModel, FAIRSettings,
                              RandomSquareCrops, TwoViewDataset, description_embeddings, get_descriptions,
                              strong_transform, weak_transform)
from clip_adapt.fair.crops import PIL_INTERPOLATION
from clip_adapt.fair.descriptions import FALLBACKS, source_label
from clip_adapt.fair.views import STRONG_AUGS
from clip_adapt.prompts import get_templates
from clip_adapt.text import class_embeddings

ADAPT_SPLITS = ("train", "test")
DEFAULT_ADAPT_SPLIT = "train"


@TRAINER_REGISTRY.register()
class FAIR(CLIPAdaptTrainer):
    """Self-training of the visual norms and the Class Description Anchors with the Learned Alignment Score."""

    # ---- config / data --------------------------------------------------------------------------------------
    def check_cfg(self, cfg):
        """Every FAIR value is checked here, before data or CLIP are loaded: FAIRConfigError naming the key."""
        fc = cfg.TRAINER.FAIR
        split = cfg.DATASET.ADAPT_SPLIT or DEFAULT_ADAPT_SPLIT
        checks = [("DATASET.ADAPT_SPLIT", split, ADAPT_SPLITS),
                  ("TRAINER.FAIR.STRONG_AUG", fc.STRONG_AUG, STRONG_AUGS),
                  ("TRAINER.FAIR.DESCRIPTIONS_FALLBACK", fc.DESCRIPTIONS_FALLBACK, FALLBACKS),
                  ("INPUT.INTERPOLATION", cfg.INPUT.INTERPOLATION, tuple(PIL_INTERPOLATION))]
        for key, value, allowed in checks:
            if value not in allowed:
                raise FAIRConfigError(f"{key} must be one of {allowed} for FAIR, got {value!r}")
        FAIRSettings.from_cfg(fc).validate()  # N_CROPS, TOPK_CROPS, CROP_SCALE, MARGIN, GAMMA, ... (named there)
        for key, low in (("MAX_DESCRIPTIONS", 1), ("RANDAUGMENT_N", 0), ("RANDAUGMENT_M", 0)):
            if not isinstance(fc[key], int) or fc[key] < low:
                raise FAIRConfigError(f"TRAINER.FAIR.{key} must be an integer >= {low}, got {fc[key]!r}")
        if not fc.TAU_T > 0:
            raise FAIRConfigError(f"TRAINER.FAIR.TAU_T must be > 0, got {fc.TAU_T!r}")
        a, b = (tuple(fc.STRONG_CROP_SCALE) + (None, None))[:2]
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and 0 < a <= b <= 1):
            raise FAIRConfigError(f"TRAINER.FAIR.STRONG_CROP_SCALE must be (a, b) with 0 < a <= b <= 1, got "
                                  f"{tuple(fc.STRONG_CROP_SCALE)}")

    @property
    def adapt_split(self):
        return self.cfg.DATASET.ADAPT_SPLIT or DEFAULT_ADAPT_SPLIT

    def build_data_loader(self):
        """Dassl's loaders (test/val), then the unlabelled adaptation split with a weak and a strong view."""
        super().build_data_loader()
        cfg, fc = self.cfg, self.cfg.TRAINER.FAIR
        dataset = self.dm.dataset
        self.adapt_source = dataset.train_x if self.adapt_split == "train" else dataset.test
        inp = cfg.INPUT
        weak = weak_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD)
        strong = strong_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD, fc.STRONG_AUG,
                                  fc.RANDAUGMENT_N, fc.RANDAUGMENT_M, fc.STRONG_CROP_SCALE)
        crops = self.crop_transform()
        # each image's views and crops are drawn from RNGs seeded by (SEED, epoch, image), the global batches by
        # (SEED, epoch): the same for any number of loader workers or processes (clip_adapt/distributed.py)
        views = SeededItems(TwoViewDataset([d.impath for d in self.adapt_source], weak, strong, crops), cfg.SEED)
        batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        sampler = GlobalBatchSampler(len(views), batch_size, seed=cfg.SEED, drop_last=len(views) > batch_size)
        self.train_loader_x = DataLoader(views, batch_sampler=sampler, num_workers=cfg.DATALOADER.NUM_WORKERS,
                                         pin_memory=torch.cuda.is_available() and cfg.USE_CUDA)
        print(f"FAIR adapts on the unlabelled {self.adapt_split} split ({len(views)} images, "
              f"{'inductive' if self.adapt_split == 'train' else 'transductive'}); strong view: {fc.STRONG_AUG}; "
              f"{fc.N_CROPS} crops per image from the full-resolution image")
        if fc.TEST_CROPS:  # evaluation images with their crops (cut in the workers, seeded per image)
            self.test_loader = self.crop_test_loader(dataset.test)
            if self.val_loader is not None:
                self.val_loader = self.crop_test_loader(dataset.val)

    def crop_transform(self):
        """N random square crops of the full-resolution image, resized to INPUT.SIZE, normalised like the views."""
        inp, fc = self.cfg.INPUT, self.cfg.TRAINER.FAIR
        return RandomSquareCrops(fc.N_CROPS, fc.CROP_SCALE, inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN,
                                 inp.PIXEL_STD)

    def crop_test_loader(self, data_source):
        """A test loader whose batches hold "img" (the test view), "crops" and "label" (TRAINER.FAIR.TEST_CROPS)."""
        cfg, inp = self.cfg, self.cfg.INPUT
        ds = CropTestDataset([d.impath for d in data_source], [d.label for d in data_source],
                             weak_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD),
                             self.crop_transform(), seed=cfg.SEED)
        return DataLoader(ds, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, shuffle=False,
                          num_workers=cfg.DATALOADER.NUM_WORKERS,
                          pin_memory=torch.cuda.is_available() and cfg.USE_CUDA)

    # ---- model ----------------------------------------------------------------------------------------------
    def build_model(self):
        cfg, fc = self.cfg, self.cfg.TRAINER.FAIR
        clip_model = self.build_clip()
        templates = get_templates(self.dataset_short, fc.TEMPLATES)
        name_emb = class_embeddings(clip_model, self.classnames, templates, cache=self.feature_cache,
                                    backbone_id=self.backbone_id)
        cache_root = cfg.TRAINER.FEATURE_CACHE_DIR or default_feature_cache_dir()
        descriptions, self.descriptions_source = get_descriptions(
            self.classnames, cfg.DATASET.NAME, path=fc.DESCRIPTIONS, url=fc.DESCRIPTIONS_URL,
            sha256=fc.DESCRIPTIONS_SHA256, fallback=fc.DESCRIPTIONS_FALLBACK, cache_dir=f"{cache_root}/descriptions",
            download=fc.DESCRIPTIONS_DOWNLOAD, templates=templates, max_per_class=fc.MAX_DESCRIPTIONS)
        desc_emb, mask = description_embeddings(clip_model, descriptions, max_per_class=fc.MAX_DESCRIPTIONS,
                                                cache=self.feature_cache, backbone_id=self.backbone_id)
        counts = mask.sum(1)
        print(f"FAIR descriptions from {source_label(self.descriptions_source)}: {int(counts.sum())} sentences, "
              f"{int(counts.min())}-{int(counts.max())} per class (M = {mask.shape[1]})")
        cda = ClassDescriptionAnchors(desc_emb, mask, name_emb, fc.TAU_T)
        self.model = FAIRModel(clip_model.visual, name_emb, cda, clip_model.logit_scale.exp().item(),
                               FAIRSettings.from_cfg(fc), train_classifier=fc.TRAIN_CLASSIFIER).to(self.device)
        del clip_model  # the text encoder is not needed after initialisation (part 2)
        self.register_trainable("fair", self.model, params=self.model.param_groups(cfg.OPTIM.WEIGHT_DECAY),
                                save="trainable")
        n_norm = sum(p.numel() for p in self.model.visual.parameters() if p.requires_grad)
        print(f"FAIR trains {n_norm:,} visual norm parameters + {self.model.cda.anchors.numel():,} CDA parameters"
              + (f" + {self.model.classifier.numel():,} classifier parameters" if fc.TRAIN_CLASSIFIER else ""))
        amp = self.precision == "amp" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        self._reset_epoch_log()

    # ---- training step --------------------------------------------------------------------------------------
    def forward_backward(self, batch):
        """One FAIR step (parts 3-7). The batch holds the two views, the crops and the sample indices -- no label."""
        weak = batch["img_weak"].to(self.device, non_blocking=True)
        strong = batch["img_strong"].to(self.device, non_blocking=True)
        crops = batch["crops"].to(self.device, non_blocking=True)
        with self.autocast():  # data-parallel: the global batch's loss, pseudo-labels and statistics on every rank
            loss, out = self.model.loss(weak, strong, crops, gather=distributed.gather_batch)
        self.optimizer_step(loss, self._optims["fair"], self.scaler)
        self.model.update_teacher()
        stats = self.model.step_statistics(out)
        self._log_step(distributed.gather_batch(batch["index"].to(self.device)), out, stats)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "ce": out.parts["ce"].item(), "fair": out.parts["fair"].item(), **stats}

    # ---- per-epoch diagnostics (after the steps; never used for training) ------------------------------------
    def _reset_epoch_log(self):
        self._epoch_log = {"index": [], "pseudo": [], "weight": [], "n": 0, "ambiguous": 0.0, "agree": 0.0}

    def _log_step(self, index, out, stats):
        log, n = self._epoch_log, len(index)
        log["index"].append(index.cpu())
        log["pseudo"].append(out.pseudo.labels.cpu())
        log["weight"].append(out.pseudo.weights.float().cpu())
        log["n"] += n
        log["ambiguous"] += stats["ambiguous"] * n
        log["agree"] += stats["agree"] * n

    def before_epoch(self):
        self._reset_epoch_log()

    def epoch_diagnostics(self):
        """Pseudo-label accuracy against the hidden labels (diagnostic only), mean weight, fraction ambiguous,
        LAS vs zero-shot agreement, over this epoch's steps."""
        log = self._epoch_log
        if not log["n"]:
            return {}
        index, pseudo, weight = (torch.cat(log[k]) for k in ("index", "pseudo", "weight"))
        hidden = torch.tensor([self.adapt_source[i].label for i in index.tolist()])
        known = hidden >= 0
        hits = (pseudo == hidden).float()
        out = {"weight": weight.mean().item(), "ambiguous": log["ambiguous"] / log["n"],
               "agree": log["agree"] / log["n"]}
        if known.any():
            out["pl_acc"] = hits[known].mean().item()
            w = weight[known]
            out["pl_acc_weighted"] = (hits[known] * w).sum().item() / max(w.sum().item(), 1e-12)
        return out

    def after_epoch(self):
        d = self.epoch_diagnostics()
        if d:
            acc = (f"{100 * d['pl_acc']:.2f}% (weighted {100 * d['pl_acc_weighted']:.2f}%)" if "pl_acc" in d
                   else "n/a (no labels)")
            print(f"FAIR epoch [{self.epoch + 1}/{self.max_epoch}]: pseudo-label accuracy (diagnostic) {acc} | "
                  f"mean weight {d['weight']:.4f} | ambiguous {100 * d['ambiguous']:.2f}% | "
                  f"LAS-zero-shot agreement {100 * d['agree']:.2f}%")
            for key, value in d.items():
                self.write_scalar(f"fair/{key}", value, self.epoch + 1)
        super().after_epoch()

    # ---- inference ------------------------------------------------------------------------------------------
    def parse_batch_test(self, batch):
        """(view, crops or None), label: crops are in the batch with TEST_CROPS (CropTestDataset)."""
        crops = batch["crops"].to(self.device) if "crops" in batch else None
        return (batch["img"].to(self.device), crops), batch["label"].to(self.device)

    @torch.no_grad()
    def model_inference(self, input):
        """The student's fused score (part 9), over the test crops with TEST_CROPS."""
        images, crops = input if isinstance(input, tuple) else (input, None)
        with self.autocast():
            return self.model(images, crops).float()

    # ---- resume / results ---------------------------------------------------------------------------------------
    def extra_state(self):
        state = {}
        if self.model.dist_align is not None:
            state["dist_align"] = self.model.dist_align.state_dict()
        if self.model.teacher_state is not None:
            state["teacher_ema"] = {n: t.cpu() for n, t in self.model.teacher_state.items()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_extra_state(self, state):
        if "dist_align" in state and self.model.dist_align is not None:
            self.model.dist_align.load_state_dict(state["dist_align"])
        if "teacher_ema" in state:
            self.model.teacher_state = {n: t.to(self.device) for n, t in state["teacher_ema"].items()}
        if "scaler" in state and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])

    def write_results(self, **extra):
        super().write_results(descriptions=self.descriptions_source, adapt_split=self.adapt_split, **extra)
