"""DPA (Ali et al., WACV 2025; docs/BASELINES.md) as a Dassl trainer: SelfTraining's data and model (FAIR's weak and
strong views of the unlabelled adaptation split, visual norm layers trained) with the text prototypes trained too,
image prototypes, their fused pseudo-labels and the prototype alignment (clip_adapt/baselines/dpa.py).

Before the first epoch the whole adaptation split is encoded once (weak view, the zero-shot model) into a memory of
features and zero-shot pseudo-labels, and the image prototypes are their class means. Every step writes the batch's
weak-view features and fused pseudo-labels into the memory; after every epoch the image prototypes are recomputed
from it (before the checkpoint, so a resumed run continues with them). The test split is classified by the text
prototypes, s f T^T (the last epoch).
"""
import torch
from dassl.engine import TRAINER_REGISTRY
from torch.utils.data import DataLoader

from clip_adapt.baselines import BaselineConfigError
from clip_adapt.baselines.dpa import BatchMeanHistory, dpa_loss, fused_pseudo_labels, image_prototypes
from clip_adapt.engine.self_training import SelfTraining
from clip_adapt.fair.views import TwoViewDataset, weak_transform


def _no_view(img):
    return torch.zeros(0)


@TRAINER_REGISTRY.register()
class DPA(SelfTraining):
    """Dual (text and image) prototypes, fused pseudo-labels, prototype alignment."""

    DATA_PARALLEL = False  # one process only (docs/DISTRIBUTED.md)

    SECTION = "DPA"
    TRAIN_CLASSIFIER = True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        dc = cfg.TRAINER.DPA
        if not 0.0 <= dc.ALPHA <= 1.0:
            raise BaselineConfigError(f"TRAINER.DPA.ALPHA must be in [0, 1], got {dc.ALPHA}")
        if dc.HISTORY < 1:
            raise BaselineConfigError(f"TRAINER.DPA.HISTORY must be >= 1, got {dc.HISTORY}")

    def build_model(self):
        super().build_model()
        n, d = len(self.adapt_source), self.text.shape[1]
        self.memory_features = torch.zeros(n, d)
        self.memory_labels = torch.full((n,), -1, dtype=torch.long)
        self.prototypes = None
        self.history = BatchMeanHistory(self.sc.HISTORY)

    @torch.no_grad()
    def build_memory(self):
        """Zero-shot features and pseudo-labels of every adaptation image (weak view) and the first prototypes."""
        inp = self.cfg.INPUT
        weak = weak_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD)
        views = TwoViewDataset([d.impath for d in self.adapt_source], weak, _no_view)
        loader = DataLoader(views, batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE, shuffle=False,
                            num_workers=self.cfg.DATALOADER.NUM_WORKERS)
        self.model.eval()
        for batch in loader:
            with self.autocast():
                feats = self.model.encode(batch["img_weak"].to(self.device)).float()
            self.memory_features[batch["index"]] = feats.cpu()
            self.memory_labels[batch["index"]] = self.model.logits(feats).argmax(-1).cpu()
        self.update_prototypes()
        counts = torch.bincount(self.memory_labels, minlength=len(self.classnames))
        print(f"DPA: image prototypes from {len(views)} zero-shot pseudo-labelled images "
              f"({int((counts == 0).sum())} classes without an image use their text prototype)")

    @torch.no_grad()
    def update_prototypes(self):
        self.prototypes = image_prototypes(self.memory_features, self.memory_labels,
                                           self.model.class_weights()).to(self.device)

    def before_train(self):
        super().before_train()  # resumes (prototypes, memory and history come back with the extra state)
        if self.prototypes is None:
            self.build_memory()

    def forward_backward(self, batch):
        dc = self.sc
        weak = batch["img_weak"].to(self.device, non_blocking=True)
        strong = batch["img_strong"].to(self.device, non_blocking=True)
        with torch.no_grad(), self.autocast():
            feats_weak = self.model.encode(weak).float()
        labels, weights, _ = fused_pseudo_labels(self.model.logits(feats_weak).detach(), feats_weak,
                                                 self.prototypes, self.model.logit_scale, self.history, dc.ALPHA)
        with self.autocast():
            strong_logits = self.model(strong).float()
        loss, parts = dpa_loss(strong_logits, labels, weights, self.prototypes, self.model.classifier,
                               dc.ALIGN_SCALE, dc.FAIRNESS_WEIGHT, dc.ALIGN_WEIGHT)
        self.memory_features[batch["index"]] = feats_weak.cpu()
        self.memory_labels[batch["index"]] = labels.cpu()
        self.step(loss)
        return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}, "weight": weights.mean().item()}

    def after_epoch(self):
        self.update_prototypes()  # from the memory of this epoch, before the checkpoint is written
        super().after_epoch()

    def extra_state(self):
        state = super().extra_state()
        state.update({"prototypes": self.prototypes.cpu() if self.prototypes is not None else None,
                      "memory_features": self.memory_features, "memory_labels": self.memory_labels,
                      "history": self.history.state_dict()})
        return state

    def load_extra_state(self, state):
        super().load_extra_state(state)
        if state.get("prototypes") is not None:
            self.prototypes = state["prototypes"].to(self.device)
            self.memory_features, self.memory_labels = state["memory_features"], state["memory_labels"]
            self.history.load_state_dict(state["history"])

    def write_results(self, **extra):
        dc = self.sc
        super().write_results(alpha=dc.ALPHA, align_weight=dc.ALIGN_WEIGHT, **extra)  # + fairness_weight
