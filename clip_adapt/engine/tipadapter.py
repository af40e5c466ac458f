"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022) as Dassl trainers (docs/BASELINES.md).

Both run on exactly the few-shot data DAC uses: they inherit DAC's data handling (clip_adapt/engine/dac.py: the
K-shot train split, the min(K, VAL_SHOTS) val cut, the A augmentation passes of the train transform encoded through
the on-disk feature cache, evaluation on cached test features), so with equal AUG_PASSES a Tip-Adapter run reads the
features a DAC run stored. Their math is clip_adapt/baselines/tip_adapter.py on DAC's cache model.

- `TipAdapter` trains nothing (configs set OPTIM.MAX_EPOCH 0): keys = the mean over passes of the normalised
  features; after the (empty) training loop alpha/beta are searched on val (clip_adapt/dac/search.py, Tip-Adapter's
  grid `tip_grid`), then the test split is evaluated.
- `TipAdapterF` makes the keys a parameter initialised from those features and trains them for OPTIM.MAX_EPOCH
  epochs with cross-entropy of the Tip-Adapter logits at INIT_ALPHA/INIT_BETA; an epoch shows each few-shot image
  once as a random one of its A cached views. Then the same val search, then test (the last epoch; no test-set
  selection).
The chosen alpha/beta go to `tipadapter_search.json` and `results.json`; the keys and alpha/beta to
`tipadapter_final.pt` (read back by --eval-only --model-dir).
"""
import json
import os.path as osp

import torch
from dassl.engine import TRAINER_REGISTRY
from torch.utils.data import DataLoader

from clip_adapt import checkpoint as ckpt
from clip_adapt.baselines import BaselineConfigError
from clip_adapt.baselines.tip_adapter import TipAdapterHead, tip_grid, tip_logits
from clip_adapt.dac import cache_keys, cache_logits, cache_values, flat_view_index, \
    search_alpha_beta
from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.engine.dac import DAC, _ViewIndex
from clip_adapt.prompts import get_prompt_set
from clip_adapt.templates import check_set
from clip_adapt.text import class_embeddings

SEARCH_JSON = "tipadapter_search.json"
FINAL_STATE = "tipadapter_final.pt"


@TRAINER_REGISTRY.register()
class TipAdapter(DAC):
    """Training-free Tip-Adapter: the cache model of the few-shot features; alpha/beta searched on val."""

    DATA_PARALLEL = False  # one process only (docs/DISTRIBUTED.md)
    final_state_file = FINAL_STATE

    MIN_EPOCHS = 0  # training-free: OPTIM.MAX_EPOCH 0

    TRAIN_KEYS = False

    @property
    def tc(self):
        return self.cfg.TRAINER.TIPADAPTER

    def check_cfg(self, cfg):
        tc, name = cfg.TRAINER.TIPADAPTER, cfg.TRAINER.NAME
        if tc.AUG_PASSES < 1:
            raise BaselineConfigError(f"TRAINER.TIPADAPTER.AUG_PASSES must be >= 1, got {tc.AUG_PASSES}")
        if tc.VAL_SHOTS == 0:
            raise BaselineConfigError("TRAINER.TIPADAPTER.VAL_SHOTS must be >= 1 (or -1 for the whole val split), "
                                      "got 0")
        if tc.BATCH_SIZE < 1:
            raise BaselineConfigError(f"TRAINER.TIPADAPTER.BATCH_SIZE must be >= 1, got {tc.BATCH_SIZE}")
        check_set(tc.TEMPLATES, "TRAINER.TIPADAPTER.TEMPLATES")
        self._grids(tc)
        if not self.TRAIN_KEYS and cfg.OPTIM.MAX_EPOCH != 0:
            raise BaselineConfigError(f"{name} is training-free: OPTIM.MAX_EPOCH must be 0, got {cfg.OPTIM.MAX_EPOCH} "
                                      f"(TipAdapterF fine-tunes the keys)")

    @staticmethod
    def _grids(tc):
        """(alphas, betas): Tip-Adapter's lists from SEARCH_SCALE = (beta, alpha) and SEARCH_STEP = (beta, alpha)."""
        for key in ("SEARCH_SCALE", "SEARCH_STEP"):
            if len(getattr(tc, key)) != 2:
                raise BaselineConfigError(f"TRAINER.TIPADAPTER.{key} must be (beta, alpha), got {getattr(tc, key)!r}")
        betas = tip_grid(tc.SEARCH_SCALE[0], tc.SEARCH_STEP[0], "TRAINER.TIPADAPTER.SEARCH_SCALE/STEP (beta)")
        alphas = tip_grid(tc.SEARCH_SCALE[1], tc.SEARCH_STEP[1], "TRAINER.TIPADAPTER.SEARCH_SCALE/STEP (alpha)")
        return alphas, betas

    # ---- data: DAC's, with this trainer's keys ------------------------------------------------------------
    @property
    def val_shots(self):
        """min(K, VAL_SHOTS) (VAL_SHOTS when K < 1); -1 = the whole val split."""
        cap, k = self.tc.VAL_SHOTS, self.cfg.DATASET.NUM_SHOTS
        if cap < 1:
            return -1
        return cap if k < 1 else min(k, cap)

    def train_views(self):
        """A x N x D features of the few-shot set: AUG_PASSES passes of the train transform, through the cache
        under the same keys DAC's passes use."""
        if self._views is None:
            if not self.fewshot:
                raise ValueError(f"{self.cfg.TRAINER.NAME}: dataset {self.cfg.DATASET.NAME} has no labelled train "
                                 f"images to build the cache model from (evaluating a built one needs its "
                                 f"{FINAL_STATE})")
            cfg = self.cfg
            passes = [self._encode_split(self.fewshot, "train", self.train_tfm, aug_pass=a,
                                         num_shots=cfg.DATASET.NUM_SHOTS, seed=cfg.SEED * 1000 + a)
                      for a in range(self.tc.AUG_PASSES)]
            self._views = torch.stack([p[0] for p in passes])
            self._view_labels = passes[0][1]
        return self._views, self._view_labels

    # ---- model --------------------------------------------------------------------------------------------
    def build_model(self):
        tc = self.tc
        self.clip_model = self.build_clip()
        self.clip_model.requires_grad_(False)
        self.clip_model.eval()
        prompts = get_prompt_set(self.dataset_short, tc.TEMPLATES, self.classnames)
        self.text = class_embeddings(self.clip_model, prompts.classnames, prompts.templates,
                                     cache=self.feature_cache, backbone_id=self.backbone_id).to(self.device)
        self.logit_scale = self.clip_model.logit_scale.exp().float().item()
        print(f"{self.cfg.TRAINER.NAME}: W from {len(prompts.templates)} templates ({prompts.name}); CLIP frozen")
        self.alpha, self.beta, self.search = float(tc.INIT_ALPHA), float(tc.INIT_BETA), None
        self._features, self._views, self._view_labels = {}, None, None
        self._cache, self._loaded_cache = None, None
        self.head = None
        if self.TRAIN_KEYS:
            n, d = len(self.fewshot), self.text.shape[1]
            labels = torch.tensor([x.label for x in self.fewshot], dtype=torch.long)
            self.head = TipAdapterHead(self.text, self.logit_scale, torch.zeros(n, d),
                                       cache_values(labels, len(self.classnames)), train_keys=True).to(self.device)
            self._keys_initialised = False
            self.register_trainable("tipadapter", self.head)
            print(f"{self.cfg.TRAINER.NAME}: {n * d:,} trainable parameters (the cache keys)")

    def before_train(self):
        views, labels = self.train_views()
        a, n, _ = views.shape
        if self.TRAIN_KEYS:
            self.init_keys()
            self._flat_views, self._flat_labels = views.reshape(a * n, -1), labels.repeat(a)
            self._n_images, self._n_passes = n, a
            self.train_loader_x = DataLoader(_ViewIndex(n), batch_size=self.tc.BATCH_SIZE, shuffle=True)
            print(f"{self.cfg.TRAINER.NAME}: fine-tuning the keys on {a} x {n} cached views, {n} per epoch "
                  f"({len(self.train_loader_x)} batches), alpha = {self.alpha:.4g}, beta = {self.beta:.4g}")
        CLIPAdaptTrainer.before_train(self)  # resumes a fine-tuned run from its last checkpoint

    @torch.no_grad()
    def init_keys(self):
        """Tip-Adapter-F's start: K = the cache keys of the few-shot features; labels checked against the values."""
        views, labels = self.train_views()
        if not torch.equal(self.head.values.argmax(1).cpu(), labels.cpu()):
            raise RuntimeError("TipAdapterF: the cached train labels differ from the few-shot split's labels")
        self.head.reset_keys(cache_keys(views))
        self._keys_initialised = True

    def forward_backward(self, batch):
        """Cross-entropy of s f W^T + alpha exp(-beta (1 - f K^T)) L, K trainable, on a batch of cached views."""
        if not self.TRAIN_KEYS:
            raise RuntimeError("TipAdapter trains nothing (OPTIM.MAX_EPOCH 0)")
        index = flat_view_index(batch["index"], self._n_images, self._n_passes, "one").to(self.device)
        loss = self.head.loss(self._flat_views[index], self._flat_labels[index], self.tc.INIT_ALPHA,
                              self.tc.INIT_BETA)
        self.model_backward_and_update(loss, "tipadapter")
        self._cache = None
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    # ---- cache model, logits, val search ------------------------------------------------------------------
    @torch.no_grad()
    def cache_model(self):
        """(keys, values, column map or None): loaded from a model dir, the fine-tuned keys, or the features'."""
        if self._cache is None:
            if self._loaded_cache is not None:
                keys, values, cols = self.loaded_cache_model()
            elif self.head is not None:
                if not self._keys_initialised:
                    self.init_keys()
                keys, values, cols = self.head.keys.detach(), self.head.values, None
            else:
                views, labels = self.train_views()
                keys, values, cols = cache_keys(views), cache_values(labels, len(self.classnames)), None
            self._cache = (keys, values, cols)
        return self._cache

    @torch.no_grad()
    def logits_from_features(self, feats, alpha=None, beta=None):
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        if alpha == 0:
            return self.logit_scale * feats @ self.text.t()
        keys, values, cols = self.cache_model()
        if cols is None:
            return tip_logits(feats, self.text, self.logit_scale, keys, values, alpha, beta)
        return self.logit_scale * feats @ self.text.t() + alpha * cache_logits(feats, keys, values, beta)[:, cols]

    @property
    def trained_epochs(self):
        return self.epoch + 1 if self.max_epoch > 0 else 0

    @torch.no_grad()
    def search_alpha_beta(self):
        """alpha/beta of the final logits searched on the val split only, DAC's search and tie rule."""
        tc = self.tc
        self.set_model_mode("eval")
        feats, labels = self.split_features("val")
        keys, values, cols = self.cache_model()
        if cols is not None:
            values = values[:, cols]
        alphas, betas = self._grids(tc)
        res = search_alpha_beta(self.logit_scale * feats @ self.text.t(), feats, keys, values, labels, alphas, betas)
        self.alpha, self.beta, self.search = res.alpha, res.beta, res
        print(f"{self.cfg.TRAINER.NAME}: alpha/beta searched on val ({labels.numel()} images, {len(alphas)} x "
              f"{len(betas)} grid): alpha = {res.alpha:.4g}, beta = {res.beta:.4g} (val accuracy "
              f"{res.val_accuracy:.2f}%)")
        record = {"alpha": res.alpha, "beta": res.beta, "val_accuracy": res.val_accuracy, "split": "val",
                  "val_images": labels.numel(), "val_shots": self.val_shots, "epoch": self.trained_epochs,
                  "search_scale": list(tc.SEARCH_SCALE), "search_step": list(tc.SEARCH_STEP)}
        with open(osp.join(self.output_dir, SEARCH_JSON), "w") as f:
            json.dump(record, f, indent=2)
        ckpt.save({"alpha": res.alpha, "beta": res.beta, "keys": keys.cpu(), "labels": values.argmax(1).cpu(),
                   "classnames": self.classnames, "epoch": self.trained_epochs,
                   "num_shots": self.cfg.DATASET.NUM_SHOTS},
                  osp.join(self.output_dir, FINAL_STATE))
        return res

    def write_results(self, **extra):
        shots = self._loaded_cache.get("num_shots") if self._loaded_cache else self.cfg.DATASET.NUM_SHOTS
        CLIPAdaptTrainer.write_results(self, alpha=self.alpha, beta=self.beta, num_shots=shots,
                                       templates=self.tc.TEMPLATES,
                                       val_accuracy=self.search.val_accuracy if self.search else None, **extra)

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def load_model(self, directory, epoch=None):
        """The fine-tuned keys (Dassl's checkpoint, TipAdapterF) and the searched cache model with alpha/beta."""
        final, loaded = self.read_final_state(directory, epoch, "keys")
        if self.head is not None and loaded is None:
            CLIPAdaptTrainer.load_model(self, directory, epoch)
            self._keys_initialised = bool(directory)
        self.use_final_state(directory, final, loaded)


@TRAINER_REGISTRY.register()
class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: the cache keys are fine-tuned with cross-entropy, then alpha/beta are searched on val."""

    MIN_EPOCHS = 1  # the cache keys are trained

    TRAIN_KEYS = True
