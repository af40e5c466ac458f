"""Linear-probe CLIP, CoOp's lpclip recipe (Zhou et al., IJCV 2022, lpclip/linear_probe.py; after CLIP's Appendix
A.3): an L2-regularised multinomial logistic regression (scikit-learn, L-BFGS, 1000 iterations) on frozen image
features, its inverse regularisation strength C chosen on the few-shot val split by lpclip's search:

1. fit each C of an initial list (lpclip: 1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6) and keep the first best on val;
2. then `steps` rounds of a bisection in log10(C) between peak/10 and peak*10: each round fits the two ends, keeps
   the better (the left one on a tie) as the current classifier and halves the interval towards it.
The classifier of the last round is the result (lpclip reports that one's test accuracy).
"""
import math
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import numpy as np
import torch

LPCLIP_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # lpclip/linear_probe.py's search_list
LPCLIP_STEPS = 8  # lpclip/linear_probe.sh's --num_step


def fit_logistic(features, labels, c, max_iter=1000):
    """scikit-learn's LogisticRegression (lbfgs, L2, `max_iter`) fitted on numpy/torch features with strength C."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # an optional dependency (pip install scikit-learn; Dassl needs it too)
        raise ImportError("the linear probe needs scikit-learn: pip install scikit-learn") from None
    return LogisticRegression(solver="lbfgs", max_iter=int(max_iter), C=float(c)).fit(_np(features), _np(labels))


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def accuracy(clf, features, labels):
    """Fraction of `features` that `clf` predicts as `labels` (lpclip's val accuracy)."""
    return float(np.mean(clf.predict(_np(features)) == _np(labels)))


@dataclass
class ProbeSearch:
    c: float  # the C of the returned classifier
    val_accuracy: float  # its val accuracy (fraction)
    classifier: object
    history: List[Tuple[float, float]] = field(default_factory=list)  # every (C, val accuracy) fitted, in order


def lpclip_search(fit: Callable[[float], object], score: Callable[[object], float], initial=LPCLIP_C,
                  steps=LPCLIP_STEPS):
    """lpclip's search of C (module docstring). fit(C) -> classifier; score(classifier) -> val accuracy."""
    if not initial:
        raise ValueError("lpclip_search: the initial list of C values is empty")
    history = []

    def trial(c):
        clf = fit(c)
        acc = score(clf)
        history.append((float(c), acc))
        return clf, acc

    scanned = [trial(c) for c in initial]
    peak = int(np.argmax([acc for _, acc in scanned]))  # the first best
    best = ProbeSearch(float(initial[peak]), scanned[peak][1], scanned[peak][0], history)
    lo, hi = math.log10(initial[peak]) - 1.0, math.log10(initial[peak]) + 1.0
    for _ in range(int(steps)):
        (clf_lo, acc_lo), (clf_hi, acc_hi) = trial(10.0 ** lo), trial(10.0 ** hi)
        if acc_lo < acc_hi:
            best = ProbeSearch(10.0 ** hi, acc_hi, clf_hi, history)
            lo = 0.5 * (lo + hi)
        else:
            best = ProbeSearch(10.0 ** lo, acc_lo, clf_lo, history)
            hi = 0.5 * (lo + hi)
    return best


def probe_logits(features, coef, intercept, classes, num_classes):
    """Decision values f A^T + b of a fitted probe (coef C' x D, intercept C', classes C' of the C labels) as an
    M x C matrix; classes the probe never saw get -inf. float64, so the argmax is scikit-learn's predict."""
    coef = torch.as_tensor(np.asarray(coef), dtype=torch.float64, device=features.device)
    intercept = torch.as_tensor(np.asarray(intercept), dtype=torch.float64, device=features.device)
    classes = torch.as_tensor(np.asarray(classes), dtype=torch.long, device=features.device)
    scores = features.double() @ coef.t() + intercept
    if coef.shape[0] == 1:  # binary problem: scikit-learn keeps one row for the second class
        scores = torch.cat([-scores, scores], dim=1)
    out = torch.full((features.shape[0], num_classes), float("-inf"), dtype=torch.float64, device=features.device)
    out[:, classes] = scores
    return out
