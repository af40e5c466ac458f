"""DAC (Gondal et al., WACV 2024) as a Dassl trainer: thin wiring of clip_adapt/dac (methods/DAC.md).

Flow: CLIP is loaded and frozen; the class text embeddings W are computed once (cached). Before training, the
few-shot train split is encoded TRAINER.DAC.AUG_PASSES times with the train transform (A augmentation passes) and,
when needed, the few-shot val split and the test split once with the test transform; every pass goes through the
on-disk feature cache (clip_adapt/features.py), so a second run with the same cache never runs the image
encoder. An epoch shows every few-shot image once, as TRAINER.DAC.VIEWS distinct cached views, in batches of
TRAINER.DAC.BATCH_SIZE views made of whole groups of IMAGES_PER_CLASS images of a class (SAMPLER class_views,
clip_adapt/dac/sampler.py), so every anchor of the contrastive loss has a positive at any K (SAMPLER random: one
shuffled view per image, EPOCH_VIEWS). The adapter g trains with the supervised contrastive loss, the text
modulation W' with cross-entropy (DAC.md, parts 1, 2, 4).
After the last epoch the cache model (keys = mean over passes of g(f)) is built and alpha/beta are searched on the
val split (never test; part 3); the chosen values are printed, written to tensorboard, to `dac_search.json`, to
`results.json` and, with the cache model, to `dac_final.pt` in the output folder. Then the last-epoch model is
tested with Dassl's evaluator on the cached test features (CoOp's `=> result` / `* accuracy: X%` lines).

Choices where the spec is silent (docs/DAC.md):
- Few-shot train split: the dataset's own (DATASET.NUM_SHOTS: CoOp's picks, clip_adapt/data/splits.py); if a
  dataset hands over more than K images of a class, K are drawn here with the same rule (CoOp's draw order from
  one RNG seeded by SEED); a class with fewer than K is an error naming it. The val split is cut to
  min(K, TRAINER.DAC.VAL_SHOTS) images per class (CoOp's min(K, 4)), drawn after train from the same stream;
  VAL_SHOTS -1 keeps all of val. Test-only datasets (ImageNet-V2/-Sketch/-A/-R) cannot be trained on: evaluate a
  model trained on ImageNet (--eval-only --model-dir, scripts/dac/ood.sh).
- Ties of the alpha/beta search: lower val cross-entropy, then smaller alpha, then smaller beta (search.TIE_RULE).
- The CE of DAC-T uses the frozen features f of the augmented views (as the final logits s f W'^T do); the two losses
  are summed (they share no parameter) and one AdamW (OPTIM.*) optimises both parts, its schedule stepped per epoch.
- Evaluation (test, val, eval-only) runs on cached features: images are decoded only on a cache miss.
- Evaluation of a model trained on another class set (the OOD protocol: ImageNet -> ImageNet-A/-R, 200 classes):
  W is rebuilt from the target class names; the per-class rows of the text modulation and the label columns of the
  cache model are mapped by class name (a target class absent from training is an error naming it).
"""
import json
import os.path as osp
import random
from collections import Counter

import torch
from dassl.engine import TRAINER_REGISTRY
from torch.utils.data import DataLoader, Dataset

from clip_adapt import checkpoint as ckpt
from clip_adapt import distributed
from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.dac import TIE_RULE, DACHead, cache_logits, cache_values, check_sampler, class_index_map, \
    epoch_batches, epoch_length, grid, remap_state_dict, search_alpha_beta
from clip_adapt.dac.sampler import num_class_view_batches
from clip_adapt.data import catalog
from clip_adapt.data.errors import DatasetError
from clip_adapt.data.splits import check_shots, coop_fewshot
from clip_adapt.dac.text_modulation import MODES as TEXT_MODES
from clip_adapt.features import cached_features, feature_key
from clip_adapt.prompts import get_templates
from clip_adapt.text import class_embeddings

SEARCH_JSON = "dac_search.json"
FINAL_STATE = "dac_final.pt"


class _ViewIndex(Dataset):
    """Rows of the cached view table (_ViewBatches yields them): the training loop never touches an image."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"index": i}


def _collate_index(items):
    """{"index": the batch's view positions} (also for an empty share of a small batch, data-parallel)."""
    return {"index": torch.tensor([item["index"] for item in items], dtype=torch.long)}


class _ViewBatches:
    """Batch sampler over the cached view rows: each epoch's global batches from `epoch_batches` (SAMPLER
    class_views or random), drawn from a generator seeded by (SEED, epoch), so a resumed run draws the same and so
    does every process; data-parallel, each process gets its contiguous share of every global batch."""

    def __init__(self, labels, n_passes, dc, seed=0):
        self.labels, self.n_passes, self.dc = labels.cpu(), n_passes, dc
        self.seed, self.epoch = max(int(seed), 0), 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        dc, n = self.dc, len(self.labels)
        if dc.SAMPLER == "class_views":
            return num_class_view_batches(n, dc.BATCH_SIZE, dc.VIEWS)
        return -(-epoch_length(n, self.n_passes, dc.EPOCH_VIEWS) // dc.BATCH_SIZE)

    def __iter__(self):
        dc = self.dc
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2 ** 63)
        for rows in epoch_batches(self.labels, self.n_passes, dc.BATCH_SIZE, dc.SAMPLER, dc.VIEWS,
                                  dc.IMAGES_PER_CLASS, dc.EPOCH_VIEWS, generator=generator):
            yield distributed.shard(rows.tolist())


@TRAINER_REGISTRY.register()
class DAC(CLIPAdaptTrainer):
    """Adapter (DAC-V) and text-embedding modulation (DAC-T) trained on cached features; alpha/beta from val."""

    final_state_file = FINAL_STATE  # the cache model with the searched alpha/beta, beside the checkpoints

    def check_cfg(self, cfg):
        dc = cfg.TRAINER.DAC
        if dc.AUG_PASSES < 1:
            raise ValueError(f"TRAINER.DAC.AUG_PASSES must be >= 1, got {dc.AUG_PASSES}")
        if dc.BATCH_SIZE < 2:
            raise ValueError(f"TRAINER.DAC.BATCH_SIZE must be >= 2 (contrastive pairs), got {dc.BATCH_SIZE}")
        if dc.TEXT_MOD not in TEXT_MODES:
            raise ValueError(f"TRAINER.DAC.TEXT_MOD must be one of {TEXT_MODES}, got {dc.TEXT_MOD!r}")
        if dc.VAL_SHOTS == 0:
            raise ValueError("TRAINER.DAC.VAL_SHOTS must be >= 1 (or -1 for the whole val split), got 0")
        check_sampler(dc.SAMPLER, dc.VIEWS, dc.AUG_PASSES, dc.BATCH_SIZE, dc.EPOCH_VIEWS,
                      dc.IMAGES_PER_CLASS)  # errors name the key
        grid(dc.SEARCH_ALPHA, "TRAINER.DAC.SEARCH_ALPHA")
        grid(dc.SEARCH_BETA, "TRAINER.DAC.SEARCH_BETA")

    def global_batches(self, cfg):
        return {"TRAINER.DAC.BATCH_SIZE": cfg.TRAINER.DAC.BATCH_SIZE}

    # ---- data ---------------------------------------------------------------------------------------------
    @property
    def test_only(self):
        """Whether DATASET.NAME is a test-only dataset of the catalog (ImageNet-V2/-Sketch/-A/-R)."""
        try:
            return catalog.get(self.cfg.DATASET.NAME).test_only
        except KeyError:  # a dataset outside the catalog (registered by the user)
            return False

    def _check_trainable(self):
        if self.test_only:
            name = self.cfg.DATASET.NAME
            raise DatasetError(f"DAC cannot train on {name}: it is a test-only dataset (no train or val split); "
                               f"train on imagenet and evaluate that model on {name} with --eval-only --model-dir "
                               f"(scripts/dac/ood.sh)")

    def _draw_train(self, source, k):
        """K items per class of `source`: CoOp's picks (clip_adapt.data.splits.coop_fewshot, one RNG seeded by
        SEED, val drawn next from the same stream); unchanged if no class has more than K; an error naming the
        class if one has fewer."""
        source = list(source or [])
        self._val_rng = random.Random(self.cfg.SEED)
        if k < 1 or not source:
            return source
        check_shots(source, k, "train", f"dataset {self.cfg.DATASET.NAME}", label_of=lambda d: d.label,
                    name_of=lambda d: d.classname)
        counts = Counter(d.label for d in source)
        if max(counts.values()) <= k:
            self._val_rng = None  # the dataset drew the shots (and the val split with them)
            return source
        drawn = coop_fewshot(source, k, self._val_rng, label_of=lambda d: d.label)
        print(f"DAC: the dataset gave up to {max(counts.values())} train images per class; drew {k} per class "
              f"(CoOp's rule, seed {self.cfg.SEED})")
        return drawn

    def _draw_val(self, source, k):
        """At most `k` val items per class (CoOp's rule; a class with fewer keeps all, as in CoOp)."""
        source = list(source or [])
        counts = Counter(d.label for d in source)
        if k < 1 or not counts or max(counts.values()) <= k:
            return source
        rng = self._val_rng if self._val_rng is not None else random.Random(self.cfg.SEED)
        drawn = coop_fewshot(source, k, rng, label_of=lambda d: d.label)
        print(f"DAC: the dataset gave up to {max(counts.values())} val images per class; drew {k} per class "
              f"(seed {self.cfg.SEED})")
        return drawn

    @property
    def val_shots(self):
        """min(K, VAL_SHOTS) (VAL_SHOTS when K < 1); -1 = the whole val split."""
        cap, k = self.cfg.TRAINER.DAC.VAL_SHOTS, self.cfg.DATASET.NUM_SHOTS
        if cap < 1:
            return -1
        return cap if k < 1 else min(k, cap)

    def build_data_loader(self):
        super().build_data_loader()
        k = self.cfg.DATASET.NUM_SHOTS
        dataset = self.dm.dataset
        if self.test_only:  # Dassl's train_x is its test split: nothing to train on (eval-only runs only)
            self.fewshot, self._val_rng = [], None
        else:
            if k < 1:
                print("DAC: DATASET.NUM_SHOTS < 1: the whole train split is the labelled set")
            self.fewshot = self._draw_train(dataset.train_x, k)
        self._fewshot_val = None  # drawn on first use (an eval-only run never needs it)
        self.train_tfm = self.train_loader_x.dataset.transform
        self.test_tfm = self.test_loader.dataset.transform
        print(f"DAC: {len(self.fewshot)} labelled train images ({k} shots), {len(dataset.test)} test images")

    @property
    def fewshot_val(self):
        """The val split cut to min(K, VAL_SHOTS) images per class: what the alpha/beta search sees."""
        if self._fewshot_val is None:
            if self.test_only:
                self._check_trainable()
            self._fewshot_val = self._draw_val(self.dm.dataset.val, self.val_shots)
            print(f"DAC: {len(self._fewshot_val)} val images ({self.val_shots} shots per class) for the alpha/beta "
                  f"search")
        return self._fewshot_val

    def _loader(self, source, tfm):
        return self.make_loader(source, "SequentialSampler", self.cfg.DATALOADER.TEST.BATCH_SIZE, tfm)

    def _encode_split(self, source, split, tfm, aug_pass=0, num_shots=-1, seed=0):
        """(features, labels) of `source` through the feature cache (the encoder runs only on a miss)."""
        key = feature_key(self.backbone_id, self.cfg.DATASET.NAME, split, [d.impath for d in source],
                          [d.label for d in source], tfm, aug_pass=aug_pass, num_shots=num_shots,
                          fewshot_seed=self.cfg.SEED if num_shots >= 1 else -1, precision=self.precision)
        desc = f"{split} features" + (f" (pass {aug_pass + 1})" if split == "train" else "")
        feats, labels = cached_features(self.feature_cache, key, self.clip_model, self._loader(source, tfm),
                                        seed=seed, device=self.device, autocast=self.autocast, desc=desc)
        return feats.to(self.device), labels.to(self.device)

    def split_features(self, split):
        """(features, labels) of the few-shot val split or of the test split (test transform, one pass, cached)."""
        if split not in self._features:
            source = self.fewshot_val if split == "val" else self.dm.dataset.test
            if not source:
                raise ValueError(f"DAC needs a {split} split, but dataset {self.cfg.DATASET.NAME} has none"
                                 + (" (alpha/beta are searched on val, never on test)" if split == "val" else ""))
            shots = self.val_shots if split == "val" else -1
            self._features[split] = self._encode_split(source, split, self.test_tfm, num_shots=shots)
        return self._features[split]

    def train_views(self):
        """A x N x D features of the few-shot set (A augmentation passes of the train transform, cached)."""
        if self._views is None:
            self._check_trainable()
            if not self.fewshot:
                raise ValueError(f"DAC: dataset {self.cfg.DATASET.NAME} has no labelled train images to build the "
                                 f"cache model from (evaluating a trained model needs its {FINAL_STATE})")
            cfg = self.cfg
            passes = [self._encode_split(self.fewshot, "train", self.train_tfm, aug_pass=a,
                                         num_shots=cfg.DATASET.NUM_SHOTS, seed=cfg.SEED * 1000 + a)
                      for a in range(cfg.TRAINER.DAC.AUG_PASSES)]
            self._views = torch.stack([p[0] for p in passes])
            self._view_labels = passes[0][1]
        return self._views, self._view_labels

    # ---- model --------------------------------------------------------------------------------------------
    def build_model(self):
        dc = self.cfg.TRAINER.DAC
        self.clip_model = self.build_clip()
        self.clip_model.requires_grad_(False)
        self.clip_model.eval()
        templates = get_templates(self.dataset_short, dc.TEMPLATES)
        text = class_embeddings(self.clip_model, self.classnames, templates, cache=self.feature_cache,
                                backbone_id=self.backbone_id).to(self.device)
        scale = self.clip_model.logit_scale.exp().float().item()
        self.head = DACHead(text, scale, residual=dc.ADAPTER_RESIDUAL, text_mod=dc.TEXT_MOD, gamma=dc.TEXT_GAMMA,
                            classnames=self.classnames).to(self.device)
        self.register_trainable("dac", self.head)
        n = sum(p.numel() for p in self.head.parameters() if p.requires_grad)
        print(f"DAC: {n:,} trainable parameters (adapter {'residual' if dc.ADAPTER_RESIDUAL else 'linear'}, "
              f"text modulation {dc.TEXT_MOD}); W from {len(templates)} templates; CLIP frozen")
        self.alpha, self.beta, self.search = float(dc.INIT_ALPHA), float(dc.INIT_BETA), None
        self._features, self._views, self._view_labels = {}, None, None
        self._cache = None  # (keys, values, column map or None)
        self._loaded_cache = None  # a cache model read from a model dir (eval-only)

    # ---- training on cached features ----------------------------------------------------------------------
    def before_train(self):
        self._check_trainable()
        dc = self.cfg.TRAINER.DAC
        views, labels = self.train_views()
        a, n, d = views.shape
        self._flat_views, self._flat_labels = views.reshape(a * n, d), labels.repeat(a)
        self._n_images, self._n_passes = n, a
        self.train_loader_x = DataLoader(_ViewIndex(a * n), collate_fn=_collate_index,
                                         batch_sampler=_ViewBatches(labels, a, dc, self.cfg.SEED))
        if dc.SAMPLER == "class_views":
            how = (f"each image once as {dc.VIEWS} distinct views, classes in groups of "
                   f"{dc.IMAGES_PER_CLASS or 'all'} images (SAMPLER class_views)")
        else:
            how = f"SAMPLER random, EPOCH_VIEWS {dc.EPOCH_VIEWS}"
        size = epoch_length(n, a, dc.EPOCH_VIEWS, dc.SAMPLER, dc.VIEWS)
        print(f"DAC: training on {a} x {n} cached views, {size} per epoch ({how}; {len(self.train_loader_x)} "
              f"batches per epoch)")
        super().before_train()

    def forward_backward(self, batch):
        """Contrastive loss on g(f) + CE on s f W'^T over a batch of cached views (DAC.md, parts 1, 2, 4)."""
        dc = self.cfg.TRAINER.DAC
        index = batch["index"].to(self.device)  # rows of the view table (_ViewBatches)
        loss, parts = self.head.loss(self._flat_views[index], self._flat_labels[index], dc.CONTRAST_TEMP,
                                     gather=distributed.gather_batch)  # data-parallel: the global batch's loss
        self.model_backward_and_update(loss, "dac")
        self._cache = None  # the adapter changed: the cache keys must be rebuilt
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "loss_con": parts["loss_con"].item(), "loss_ce": parts["loss_ce"].item()}

    # ---- cache model and the val search -------------------------------------------------------------------
    def loaded_cache_model(self):
        """(keys, values, column map or None) of the cache read from a model dir; the column map sends its classes
        to this dataset's when they differ."""
        src = list(self._loaded_cache["classnames"])
        keys = self._loaded_cache["keys"].to(self.device)
        values = cache_values(self._loaded_cache["labels"].to(self.device), len(src))
        cols = None if src == self.classnames else class_index_map(src, self.classnames).to(self.device)
        return keys, values, cols

    @torch.no_grad()
    def cache_model(self):
        """(keys, values, column map): keys = mean over passes of g(f) (part 1), or the one read from a model dir."""
        if self._cache is None:
            if self._loaded_cache is not None:
                keys, values, cols = self.loaded_cache_model()
            else:
                views, labels = self.train_views()
                keys, values = self.head.build_cache(views, labels, len(self.classnames))
                cols = None
            self._cache = (keys, values, cols)
        return self._cache

    @torch.no_grad()
    def logits_from_features(self, feats, alpha=None, beta=None):
        """Final logits s f W'^T + alpha * exp(-beta (1 - g(f) K^T)) L (DAC.md, part 3)."""
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        logits = self.head.text_logits(feats)
        if alpha != 0:
            keys, values, cols = self.cache_model()
            image = cache_logits(self.head.adapter(feats), keys, values, beta)
            logits = logits + alpha * (image if cols is None else image[:, cols])
        return logits

    @torch.no_grad()
    def search_alpha_beta(self):
        """Grid search of alpha and beta on the val split only (DAC.md, part 3); logs and saves the choice."""
        dc = self.cfg.TRAINER.DAC
        self.set_model_mode("eval")
        feats, labels = self.split_features("val")
        keys, values, cols = self.cache_model()
        if cols is not None:
            values = values[:, cols]
        alphas, betas = grid(dc.SEARCH_ALPHA, "TRAINER.DAC.SEARCH_ALPHA"), grid(dc.SEARCH_BETA, "TRAINER.DAC.SEARCH_BETA")
        res = search_alpha_beta(self.head.text_logits(feats), self.head.adapter(feats), keys, values, labels,
                                alphas, betas)
        self.alpha, self.beta, self.search = res.alpha, res.beta, res
        print(f"DAC: alpha/beta searched on val ({labels.numel()} images, {len(alphas)} x {len(betas)} grid): "
              f"alpha = {res.alpha:.4g}, beta = {res.beta:.4g} (val accuracy {res.val_accuracy:.2f}%, "
              f"cross-entropy {res.val_cross_entropy:.4f}; ties: {TIE_RULE})")
        self.write_scalar("dac/alpha", res.alpha, self.epoch)
        self.write_scalar("dac/beta", res.beta, self.epoch)
        record = {"alpha": res.alpha, "beta": res.beta, "val_accuracy": res.val_accuracy,
                  "val_cross_entropy": res.val_cross_entropy, "tie_rule": TIE_RULE, "split": "val",
                  "val_images": labels.numel(), "val_shots": self.val_shots, "epoch": self.epoch + 1,
                  "search_alpha": list(dc.SEARCH_ALPHA), "search_beta": list(dc.SEARCH_BETA)}
        if not distributed.is_main():  # every process searched the same (gathered) features; rank 0 writes
            return res
        with open(osp.join(self.output_dir, SEARCH_JSON), "w") as f:
            json.dump(record, f, indent=2)
        ckpt.save({"alpha": res.alpha, "beta": res.beta, "keys": keys.cpu(), "labels": self.train_views()[1].cpu(),
                   "classnames": self.classnames, "epoch": self.epoch + 1, "num_shots": self.cfg.DATASET.NUM_SHOTS},
                  osp.join(self.output_dir, FINAL_STATE))
        return res

    def after_train(self):
        self.search_alpha_beta()
        super().after_train()

    def write_results(self, **extra):
        shots = self._loaded_cache.get("num_shots") if self._loaded_cache else self.cfg.DATASET.NUM_SHOTS
        super().write_results(alpha=self.alpha, beta=self.beta, num_shots=shots,
                              val_accuracy=self.search.val_accuracy if self.search else None, **extra)

    # ---- inference on cached features ---------------------------------------------------------------------
    def test(self, split=None):
        """Dassl's test loop (and its `=> result` lines) over the cached features of the split."""
        name = split or self.cfg.TEST.SPLIT
        if name == "val" and self.val_loader is None:
            name = "test"  # Dassl's rule
        feats, labels = self.split_features(name)
        bs = self.cfg.DATALOADER.TEST.BATCH_SIZE
        batches = [{"features": feats[i:i + bs], "label": labels[i:i + bs]} for i in range(0, len(labels), bs)]
        attr = "val_loader" if name == "val" else "test_loader"
        loader = getattr(self, attr)
        setattr(self, attr, batches)
        try:
            return super().test(name)
        finally:
            setattr(self, attr, loader)

    def parse_batch_test(self, batch):
        return batch["features"], batch["label"]

    def model_inference(self, features):
        return self.logits_from_features(features)

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _load_model_state(self, name, state):
        src = (state.get("_extra_state") or {}).get("classnames") if name == "dac" else None
        if src is not None and list(src) != self.classnames:
            print(f"DAC: the model was trained on {len(src)} classes; mapping them by name to this dataset's "
                  f"{len(self.classnames)}")
            state = remap_state_dict(state, src, self.classnames)
        super()._load_model_state(name, state)

    def load_model(self, directory, epoch=None):
        """The registered head (Dassl's checkpoint) and the cache model with the searched alpha/beta."""
        final, loaded = self.read_final_state(directory, epoch, "adapter")
        super().load_model(directory, epoch)
        self.use_final_state(directory, final, loaded)

    def read_final_state(self, directory, epoch, trained):
        """(path, content or None) of `<directory>/<final_state_file>`; a --load-epoch other than the one it was
        saved at is an error (it would pair the cache model with another epoch's `trained` part)."""
        final = osp.join(directory, self.final_state_file) if directory else ""
        loaded = ckpt.load(final) if final and osp.exists(final) else None
        if loaded is not None and epoch is not None and int(epoch) != int(loaded.get("epoch", epoch)):
            raise ValueError(f"{final} holds the cache model of epoch {loaded['epoch']}; --load-epoch {epoch} "
                             f"would pair it with another epoch's {trained}")
        return final, loaded

    def use_final_state(self, directory, final, loaded):
        """Take the cache model and alpha/beta from `loaded` (read_final_state), or say they are rebuilt."""
        name = self.cfg.TRAINER.NAME
        if loaded is not None:
            self._loaded_cache, self._cache = loaded, None
            self.alpha, self.beta = float(loaded["alpha"]), float(loaded["beta"])
            print(f"{name}: loaded the cache model ({len(loaded['labels'])} images) and the val-searched "
                  f"alpha = {self.alpha:.4g}, beta = {self.beta:.4g} from {final}")
        elif directory:
            print(f"{name}: no {self.final_state_file} in {directory}: the cache model is built from this dataset's few-shot "
                  f"train split, alpha = {self.alpha:.4g}, beta = {self.beta:.4g}")

    def extra_state(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def load_extra_state(self, state):
        if "alpha" in state:
            self.alpha, self.beta = float(state["alpha"]), float(state["beta"])
