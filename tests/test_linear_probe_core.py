"""The lpclip linear probe (clip_adapt/baselines/linear_probe.py): its C search and its logits, against scikit-learn
fitted independently on the same features. No Dassl."""
import math

import numpy as np
import pytest
import torch

from clip_adapt.baselines.linear_probe import LPCLIP_C, accuracy, fit_logistic, lpclip_search, probe_logits

sklearn = pytest.importorskip("sklearn", reason="the linear probe needs scikit-learn")


class _Stub:
    def __init__(self, c):
        self.c = c


def test_search_follows_lpclips_scan_then_bisection():
    """With val accuracy peaked at log10 C = 2.3, the scan keeps 1e2, each round keeps the better end, and the
    bisection closes in on the peak."""
    def score(clf):
        return -abs(math.log10(clf.c) - 2.3)

    res = lpclip_search(_Stub, score, LPCLIP_C, steps=8)
    tried = [c for c, _ in res.history]
    assert tried[:7] == list(LPCLIP_C)
    assert tried[7:9] == pytest.approx([10.0, 1000.0])  # peak/10 and peak*10 of the scan's best (1e2)
    lo, hi = 1.0, 3.0  # the rule written out: keep the better end, move the other end to the midpoint
    for k in range(8):
        c_lo, c_hi = tried[7 + 2 * k], tried[8 + 2 * k]
        assert (math.log10(c_lo), math.log10(c_hi)) == pytest.approx((lo, hi))
        if score(_Stub(c_lo)) < score(_Stub(c_hi)):
            chosen, lo = c_hi, (lo + hi) / 2
        else:
            chosen, hi = c_lo, (lo + hi) / 2
    assert res.c == pytest.approx(chosen) and res.classifier.c == res.c
    assert abs(math.log10(res.c) - 2.3) < 0.05
    assert res.val_accuracy == pytest.approx(score(_Stub(res.c)))


def test_search_picks_the_c_with_the_best_val_accuracy_of_each_round():
    """Every round's pick is the end with the higher val accuracy; a tie keeps the smaller C (lpclip's `else`)."""
    res = lpclip_search(_Stub, lambda clf: 1.0, (1.0, 10.0), steps=1)  # all tied
    assert res.c == pytest.approx(0.1)  # the first of the scan, then the left end
    res = lpclip_search(_Stub, lambda clf: clf.c, (1e-2, 1.0, 1e2), steps=3)  # larger C always better
    assert res.c == pytest.approx(1e3) and res.val_accuracy == pytest.approx(1e3)


def _blobs(seed, n_per_class=6, c=3, d=8):
    rng = np.random.RandomState(seed)
    centres = rng.randn(c, d) * 2
    x = np.concatenate([centres[k] + rng.randn(n_per_class, d) for k in range(c)])
    y = np.repeat(np.arange(c), n_per_class)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def test_probe_predictions_equal_sklearns_fitted_on_the_same_features():
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(0)
    xt, _ = _blobs(1, n_per_class=20)
    clf = fit_logistic(x, y, 0.7)
    ref = LogisticRegression(solver="lbfgs", max_iter=1000, C=0.7).fit(x.numpy(), y.numpy())
    logits = probe_logits(xt, clf.coef_, clf.intercept_, clf.classes_, 3)
    assert np.array_equal(logits.argmax(1).numpy(), ref.predict(xt.numpy()))
    assert np.allclose(logits.numpy(), ref.decision_function(xt.numpy()))
    assert accuracy(clf, x, y) == float(np.mean(ref.predict(x.numpy()) == y.numpy()))


def test_probe_logits_of_unseen_classes_and_binary_problems():
    x, y = _blobs(2, c=2)
    clf = fit_logistic(x, y + 1, 1.0)  # labels 1, 2 of 3 classes: a binary probe, class 0 never seen
    logits = probe_logits(x, clf.coef_, clf.intercept_, clf.classes_, 3)
    assert torch.isinf(logits[:, 0]).all()
    assert np.array_equal(logits.argmax(1).numpy(), clf.predict(x.numpy()))
