"""SelfTraining: the plain unsupervised-adaptation baseline (docs/BASELINES.md) as a Dassl trainer.

Data as FAIR's (clip_adapt/fair/views.py): the unlabelled adaptation split (DATASET.ADAPT_SPLIT, train by default;
test = transductive) as a weak view (CLIP's test preprocessing) and a strong view (random resized crop, flip,
RandAugment); labels never reach training. A teacher gives thresholded pseudo-labels on the weak view, the student is
trained with cross-entropy on the strong view (clip_adapt/baselines/self_training.py); only the visual norm layers
train. TEACHER zeroshot: the teacher is the frozen zero-shot CLIP (UPL's offline pseudo-labels, here per step);
current: the student itself without gradient (FixMatch); ema: an exponential moving average of the student
(momentum TEACHER_EMA; MUST's teacher). FAIRNESS_WEIGHT adds FAIR's fairness term on the strong view's batch-mean
prediction (MUST's regulariser); LOSS_MEAN selected averages the cross-entropy over the selected samples only
(MUST's). The test split is classified by the student's s * f W^T (the last epoch).
"""
import copy

import torch
from dassl.engine import TRAINER_REGISTRY
from torch.utils.data import DataLoader

from clip_adapt.baselines import BaselineConfigError
from clip_adapt.baselines.self_training import LOSS_MEANS, NormTunedCLIP, ema_update, self_training_loss, \
    thresholded_pseudo_labels
from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.fair.pseudo_labels import fairness_term
from clip_adapt.fair.views import STRONG_AUGS, TwoViewDataset, strong_transform, weak_transform
from clip_adapt.prompts import get_prompt_set
from clip_adapt.templates import check_set
from clip_adapt.text import class_embeddings

ADAPT_SPLITS = ("train", "test")
TEACHERS = ("zeroshot", "current", "ema")


@TRAINER_REGISTRY.register()
class SelfTraining(CLIPAdaptTrainer):
    """Thresholded pseudo-label cross-entropy (weak view -> strong view); visual norm layers trained."""

    DATA_PARALLEL = False  # one process only (docs/DISTRIBUTED.md)

    SECTION = "SELFTRAINING"
    TRAIN_CLASSIFIER = False

    @property
    def sc(self):
        return self.cfg.TRAINER[self.SECTION]

    @property
    def adapt_split(self):
        return self.cfg.DATASET.ADAPT_SPLIT or "train"

    def check_cfg(self, cfg):
        sc, key = cfg.TRAINER[self.SECTION], f"TRAINER.{self.SECTION}"
        split = cfg.DATASET.ADAPT_SPLIT or "train"
        if split not in ADAPT_SPLITS:
            raise BaselineConfigError(f"DATASET.ADAPT_SPLIT must be one of {ADAPT_SPLITS} for {cfg.TRAINER.NAME}, "
                                      f"got {split!r}")
        if sc.STRONG_AUG not in STRONG_AUGS:
            raise BaselineConfigError(f"{key}.STRONG_AUG must be one of {STRONG_AUGS}, got {sc.STRONG_AUG!r}")
        check_set(sc.TEMPLATES, f"{key}.TEMPLATES")
        if "THRESHOLD" in sc and not 0.0 <= sc.THRESHOLD <= 1.0:
            raise BaselineConfigError(f"{key}.THRESHOLD must be in [0, 1], got {sc.THRESHOLD}")
        if "TEACHER" in sc and sc.TEACHER not in TEACHERS:
            raise BaselineConfigError(f"{key}.TEACHER must be one of {TEACHERS}, got {sc.TEACHER!r}")
        if "TEACHER_EMA" in sc and not 0.0 <= sc.TEACHER_EMA < 1.0:
            raise BaselineConfigError(f"{key}.TEACHER_EMA must be in [0, 1), got {sc.TEACHER_EMA}")
        if "LOSS_MEAN" in sc and sc.LOSS_MEAN not in LOSS_MEANS:
            raise BaselineConfigError(f"{key}.LOSS_MEAN must be one of {LOSS_MEANS}, got {sc.LOSS_MEAN!r}")

    # ---- data -----------------------------------------------------------------------------------------------
    def build_data_loader(self):
        """Dassl's loaders (val/test), then the unlabelled adaptation split as (weak, strong) views (FAIR's)."""
        super().build_data_loader()
        cfg, sc, inp = self.cfg, self.sc, self.cfg.INPUT
        dataset = self.dm.dataset
        self.adapt_source = dataset.train_x if self.adapt_split == "train" else dataset.test
        weak = weak_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD)
        strong = strong_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD, sc.STRONG_AUG,
                                  sc.RANDAUGMENT_N, sc.RANDAUGMENT_M, sc.STRONG_CROP_SCALE)
        self.views = TwoViewDataset([d.impath for d in self.adapt_source], weak, strong)
        bs = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        self.train_loader_x = DataLoader(self.views, batch_size=bs, shuffle=True,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS, drop_last=len(self.views) > bs,
                                         pin_memory=torch.cuda.is_available() and cfg.USE_CUDA)
        print(f"{cfg.TRAINER.NAME} adapts on the unlabelled {self.adapt_split} split ({len(self.views)} images); "
              f"strong view: {sc.STRONG_AUG}")

    # ---- model ----------------------------------------------------------------------------------------------
    def build_model(self):
        cfg, sc = self.cfg, self.sc
        clip_model = self.build_clip()
        prompts = get_prompt_set(self.dataset_short, sc.TEMPLATES, self.classnames)
        self.text = class_embeddings(clip_model, prompts.classnames, prompts.templates, cache=self.feature_cache,
                                     backbone_id=self.backbone_id).to(self.device)
        scale = clip_model.logit_scale.exp().item()
        self.model = NormTunedCLIP(clip_model.visual, self.text, scale,
                                   train_classifier=self.TRAIN_CLASSIFIER).to(self.device)
        self.teacher = None
        if sc.get("TEACHER", "current") in ("zeroshot", "ema"):  # the frozen zero-shot CLIP (the EMA's start)
            self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval()
        self._trained_names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        del clip_model
        self.register_trainable(self.SECTION.lower(), self.model,
                                params=self.model.param_groups(cfg.OPTIM.WEIGHT_DECAY), save="trainable")
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print(f"{cfg.TRAINER.NAME} trains {n:,} parameters (visual norm layers"
              f"{' + the text prototypes' if self.TRAIN_CLASSIFIER else ''}); W from {len(prompts.templates)} "
              f"templates ({prompts.name})")
        amp = self.precision == "amp" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if amp else None

    # ---- training step --------------------------------------------------------------------------------------
    def step(self, loss):
        """Backward and update (with the AMP grad scaler when TRAINER.PREC is amp on CUDA)."""
        self.optimizer_step(loss, self._optims[self.SECTION.lower()], self.scaler)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()

    def forward_backward(self, batch):
        weak = batch["img_weak"].to(self.device, non_blocking=True)
        strong = batch["img_strong"].to(self.device, non_blocking=True)
        teacher = self.teacher if self.teacher is not None else self.model
        with torch.no_grad(), self.autocast():
            weak_logits = teacher(weak).float()
        sc = self.sc
        labels, mask, conf = thresholded_pseudo_labels(weak_logits, sc.THRESHOLD)
        with self.autocast():
            strong_logits = self.model(strong).float()
            loss = self_training_loss(strong_logits, labels, mask, sc.LOSS_MEAN)
            if sc.FAIRNESS_WEIGHT:
                loss = loss + sc.FAIRNESS_WEIGHT * fairness_term(strong_logits)
        self.step(loss)
        if sc.TEACHER == "ema":
            ema_update(self.teacher, self.model, sc.TEACHER_EMA, self._trained_names)
        return {"loss": loss.item(), "mask": mask.mean().item(), "conf": conf.mean().item()}

    # ---- inference / results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def model_inference(self, images):
        with self.autocast():
            return self.model(images).float()

    def extra_state(self):
        state = {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}
        if self.sc.get("TEACHER") == "ema":
            state["teacher_ema"] = {n: p.detach().cpu() for n, p in self.teacher.named_parameters()
                                    if n in self._trained_names}
        return state

    def load_extra_state(self, state):
        if "scaler" in state and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if "teacher_ema" in state and self.teacher is not None:
            params = dict(self.teacher.named_parameters())
            with torch.no_grad():
                for n, t in state["teacher_ema"].items():
                    params[n].copy_(t.to(params[n].device))

    def write_results(self, **extra):
        sc = self.sc
        own = {k.lower(): sc[k] for k in ("THRESHOLD", "TEACHER", "TEACHER_EMA", "LOSS_MEAN", "FAIRNESS_WEIGHT")
               if k in sc}
        super().write_results(adapt_split=self.adapt_split, templates=sc.TEMPLATES, **own, **extra)
