"""The published partial-label losses against NumPy references written from their formulas.

Gradients are checked against central differences of the NumPy reference (float64), so neither
the values nor the gradients rely on the Keras implementation.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from kpartial import class_stats, losses

Y = np.array([[1, -1, 0, 0], [0, 0, 0, 0], [-1, 1, 1, 0]], dtype=np.int8)
Z = np.array([[2.0, -1.0, 0.5, -0.3], [3.0, -4.0, 1.0, 0.2], [1.5, -2.5, 0.7, -1.2]])
PRIORS = np.array([0.1, 0.5, 0.02, 0.3])


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def sp(z):
    return np.logaddexp(0.0, z)


def masks(y, unknown_negative=False):
    pos, neg = (y > 0) * 1.0, (y < 0) * 1.0
    if unknown_negative:
        neg = 1.0 - pos
    return pos, neg, (y == 0) * 1.0


def wan(y, z, gamma=None):
    pos, neg, unk = masks(y)
    gamma = 1.0 / (z.shape[1] - 1) if gamma is None else gamma
    return (pos * sp(-z) + (neg + gamma * unk) * sp(z)).sum() / max(
        (pos + neg + gamma * unk).sum(), 1
    )


def an_ls(y, z, eps=0.1):
    # Cole et al.'s code: positives' target 1 - eps, every other entry's eps.
    t = np.where(y > 0, 1 - eps, eps)
    return (t * sp(-z) + (1 - t) * sp(z)).mean()


def epr(y, z, priors=PRIORS, lam=1.0):
    # Cole et al.'s code: the batch mean of the expected positives, squared, over C ** 2.
    pos, neg, _ = masks(y)
    bce = (pos * sp(-z) + neg * sp(z)).sum() / max((pos + neg).sum(), 1)
    reg = (sig(z).sum(axis=1).mean() - priors.sum()) ** 2 / z.shape[1] ** 2
    return bce + lam * reg


def focal(y, z, gamma=2.0, unknown="negative"):
    pos, neg, _ = masks(y, unknown == "negative")
    p = sig(z)
    return (pos * (1 - p) ** gamma * sp(-z) + neg * p**gamma * sp(z)).sum() / max(
        (pos + neg).sum(), 1
    )


def asl(y, z, gp=0.0, gn=4.0, m=0.05, unknown="negative"):
    pos, neg, _ = masks(y, unknown == "negative")
    p = sig(z)
    pm = np.maximum(p - m, 0)
    entry = pos * (1 - p) ** gp * -np.log(p) + neg * pm**gn * -np.log(1 - pm)
    return entry.sum() / max((pos + neg).sum(), 1)


def csl_ignored(y, p, priors, thr, k):
    """CSL's selection, as its code does it: the unannotated entries of classes with prior > thr,
    and the k x B unannotated entries of the batch with the highest scores (argsort of 1 - p over
    the flattened unannotated entries)."""
    unannotated = (y == 0).ravel()
    ignore = np.broadcast_to(priors[None, :] > thr, p.shape).astype(float).ravel().copy()
    candidates = np.flatnonzero(unannotated)
    order = np.argsort(1 - p.ravel()[candidates], kind="stable")
    ignore[candidates[order[: k * p.shape[0]]]] = 1
    return ignore.reshape(p.shape)


def p_asl(y, z, priors=PRIORS, gp=0.0, gn=1.0, gu=4.0, thr=0.05, k=2):
    pos, neg, unk = masks(y)
    p = sig(z)
    ignore = csl_ignored(y, p, priors, thr, k)
    entry = (
        pos * (1 - p) ** gp * -np.log(p)
        + neg * p**gn * -np.log(1 - p)
        + unk * (1 - ignore) * p**gu * -np.log(1 - p)
    )
    return entry.sum() / max((pos + neg + unk * (1 - ignore)).sum(), 1)


def hill(y, z, m=1.0, gamma=2.0, lam=1.5):
    pos = (y > 0) * 1.0
    p, pm = sig(z), sig(z - m)
    entry = pos * (1 - pm) ** gamma * -np.log(pm) + (1 - pos) * (lam - p) * p**2
    return entry.mean()


def an(y, z):
    pos = (y > 0) * 1.0
    return (pos * sp(-z) + (1 - pos) * sp(z)).mean()


def splc_warmup(y, z, m=1.0, gamma=2.0):
    pos = (y > 0) * 1.0
    loss_pos = (1 - sig(z - m)) ** gamma * sp(-(z - m))
    return (pos * loss_pos + (1 - pos) * sig(z) ** gamma * sp(z)).mean()


CASES = {
    "wan": (lambda: losses.WeakAssumeNegativeBCE(), wan),
    "wan_gamma": (lambda: losses.WeakAssumeNegativeBCE(0.2), lambda y, z: wan(y, z, 0.2)),
    "an_ls": (lambda: losses.AssumeNegativeLabelSmoothing(0.1), an_ls),
    "epr": (lambda: losses.ExpectedPositiveRegularization(PRIORS), epr),
    "focal": (lambda: losses.FocalLoss(2.0), focal),
    "focal_ignore": (
        lambda: losses.FocalLoss(2.0, unknown="ignore"),
        lambda y, z: focal(y, z, unknown="ignore"),
    ),
    "asl": (lambda: losses.AsymmetricLoss(), asl),
    "asl_no_margin": (
        lambda: losses.AsymmetricLoss(1.0, 2.0, 0.0),
        lambda y, z: asl(y, z, 1, 2, 0),
    ),
    "p_asl": (lambda: losses.PartialSelectiveAsymmetricLoss(PRIORS, likelihood_top_k=2), p_asl),
    "hill": (lambda: losses.HillLoss(), hill),
    "ll_r_epoch0": (lambda: losses.LargeLossModification("reject"), lambda y, z: an(y, z)),
    "splc_epoch0": (
        lambda: losses.SelfPacedLossCorrection(),
        lambda y, z: splc_warmup(y, z),
    ),
}


def numeric_gradient(fn, y, z, h=1e-6):
    grad = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (fn(y, up) - fn(y, down)) / (2 * h)
    return grad


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_match_numpy(name):
    make, reference = CASES[name]
    loss = make()
    z = tf.constant(Z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss(Y, z)
    np.testing.assert_allclose(float(value), reference(Y, Z), rtol=1e-5)
    # p_asl's top-k selection is piecewise constant: the reference differentiates through it
    # exactly like the loss (selection held fixed), since no score is near a top-k boundary here.
    np.testing.assert_allclose(
        tape.gradient(value, z).numpy(), numeric_gradient(reference, Y, Z), rtol=2e-3, atol=1e-6
    )


@pytest.mark.parametrize("name", list(CASES))
def test_all_unknown_batch_matches_numpy(name):
    loss = CASES[name][0]()
    value = float(loss(np.zeros_like(Y), Z.astype(np.float32)))
    np.testing.assert_allclose(value, CASES[name][1](np.zeros_like(Y), Z), rtol=1e-5)


def test_p_asl_ignores_the_batch_top_k_unannotated_entries_as_csl_does():
    # B = 2, k = 1: CSL ignores the 2 highest-scoring unannotated entries of the batch, both in
    # row 0 here; a per-example top-1 would ignore one per row, and ranking over all scores would
    # spend row 0's slot on its annotated positive. Class 2's prior equals the threshold: CSL's
    # test is prior > threshold, so it is not ignored for its prior.
    y = np.array([[1, 0, 0, 0], [0, 0, -1, 0]], np.int8)
    z = np.array([[4.0, 2.0, 1.5, -1.0], [0.5, -2.0, 3.0, -0.5]])
    priors = np.array([0.01, 0.01, 0.05, 0.01])
    p = sig(z)
    expected_ignored = np.array([[0, 1, 1, 0], [0, 0, 0, 0]], float)
    np.testing.assert_array_equal(csl_ignored(y, p, priors, 0.05, 1), expected_ignored)
    loss = losses.PartialSelectiveAsymmetricLoss(priors, prior_threshold=0.05, likelihood_top_k=1)
    reference = p_asl(y, z, priors, thr=0.05, k=1)
    np.testing.assert_allclose(float(loss(y, z.astype(np.float32))), reference, rtol=1e-5)
    # Unannotated entries left in the loss: row 0 col 3, row 1 cols 0, 1, 3; with a positive and a
    # negative, 6 counted entries (CSL sums them; here the sum is divided by the count).
    assert float(loss.sums(y, z.astype(np.float32))[1][0]) == 6.0


def test_an_ls_targets_are_cole_et_al_s():
    loss = losses.AssumeNegativeLabelSmoothing(0.1)
    y = np.array([[1, 0, -1]], np.int8)
    z = np.zeros((1, 3), np.float32)
    with tf.GradientTape() as tape:
        logits = tf.constant(z)
        tape.watch(logits)
        value = loss(y, logits)
    # d/dz of t softplus(-z) + (1 - t) softplus(z) at z = 0 is 0.5 - t: t = 0.9, 0.1, 0.1.
    np.testing.assert_allclose(tape.gradient(value, logits).numpy() * 3, [[-0.4, 0.4, 0.4]])


def test_epr_squares_the_batch_mean_as_cole_et_al_do():
    loss = losses.ExpectedPositiveRegularization([0.25, 0.25], regularisation_weight=1.0)
    y = np.zeros((2, 2), np.int8)  # no known label: the regulariser alone
    z = np.array([[20.0, 20.0], [-20.0, -20.0]], np.float32)  # expected positives 2 and 0
    # ((2 + 0) / 2 - 0.5) ** 2 / 2 ** 2 = 0.0625; the mean of each example's squared distance,
    # ((1.5 / 2) ** 2 + (0.5 / 2) ** 2) / 2 = 0.3125, is what the port computed before.
    np.testing.assert_allclose(float(loss(y, z)), 0.0625, rtol=1e-5)


def test_get_passes_modes_options_and_priors():
    stats = class_stats.ClassStatistics.from_labels(Y, ["a", "b", "c", "d"])
    assert losses.get("ll_cp").mode == "permanent" and losses.get("ll_r").mode == "reject"
    assert losses.get("epr", stats).priors == stats.priors.tolist()
    assert losses.get("focal", gamma=1.0).gamma == 1.0


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown must be"):
        losses.FocalLoss(unknown="maybe")
    with pytest.raises(ValueError, match="smoothing"):
        losses.AssumeNegativeLabelSmoothing(1.0)
    with pytest.raises(ValueError, match="margin"):
        losses.AsymmetricLoss(margin=1.0)


def _reference_large_loss(y, z, epoch, mode, delta_rel=0.1, max_rate=0.2):
    pos, _, unk = masks(y)
    loss_neg = sp(z)
    unknown_loss = loss_neg * unk
    k = int(np.ceil(min(epoch * delta_rel, max_rate) * y.size))
    threshold = np.sort(unknown_loss.ravel())[::-1][k - 1] if k > 0 else np.inf
    select = unk * (unknown_loss >= threshold)
    as_negative = (1 - pos) * (1 - select) * loss_neg
    if mode == "reject":
        entry = pos * sp(-z) + as_negative
    else:
        entry = (pos + select) * sp(-z) + as_negative
    return entry.mean(), select


@pytest.mark.parametrize("mode", ["reject", "temporary", "permanent"])
@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_large_loss_modification_matches_numpy(mode, epoch):
    loss = losses.LargeLossModification(mode, delta_rel=0.1)
    loss.epoch.assign(epoch)
    value, select = _reference_large_loss(Y, Z, epoch, mode)
    np.testing.assert_allclose(float(loss(Y, Z.astype(np.float32))), value, rtol=1e-5)
    np.testing.assert_array_equal(loss.selection(Y, Z.astype(np.float32)).numpy(), select)
    assert select.sum() == min(int(np.ceil(0.1 * epoch * Y.size)), (Y == 0).sum())
    corrections = loss.permanent_corrections(Y, Z.astype(np.float32))
    assert (corrections is None) == (mode != "permanent")


def test_large_loss_epoch_is_read_by_a_compiled_step_without_retracing():
    loss = losses.LargeLossModification("reject", delta_rel=0.1)
    compiled = tf.function(lambda y, z: loss(y, z), jit_compile=True)
    y, z = tf.constant(Y), tf.constant(Z, tf.float32)
    values = []
    for epoch in (0, 2):
        loss.epoch.assign(epoch)
        values.append(float(compiled(y, z)))
    np.testing.assert_allclose(
        values, [_reference_large_loss(Y, Z, e, "reject")[0] for e in (0, 2)], rtol=1e-5
    )
    assert compiled.experimental_get_tracing_count() == 1


def _selection_and_unknown_loss(loss, y, z):
    unknown = tf.cast(tf.equal(y, 0), tf.float32)
    return loss.selection(y, z), tf.math.softplus(z) * unknown


# (delta_rel, max_rate, epoch): rate 0 (epoch 0 and delta_rel 0), k = 1, small and large shares,
# the max_rate cap, and rates whose k exceeds the number of entries (every unknown selected).
LARGE_LOSS_RATES = [
    (0.1, 0.2, 0),
    (0.0, 0.2, 5),
    (1e-6, 0.2, 1),
    (0.002, 0.2, 3),
    (0.05, 0.2, 2),
    (0.1, 0.2, 7),
    (0.3, 1.5, 3),
    (0.25, 0.9, 4),
]


@pytest.mark.parametrize("jit", [False, True])
def test_large_loss_selection_equals_a_full_sort_on_random_batches(jit):
    rng = np.random.default_rng(7)
    shapes = [(8, 16), (5, 37), (1, 3)]
    for delta_rel, max_rate, epoch in LARGE_LOSS_RATES:
        loss = losses.LargeLossModification("temporary", delta_rel=delta_rel, max_rate=max_rate)
        loss.epoch.assign(epoch)
        fn = tf.function(functools.partial(_selection_and_unknown_loss, loss), jit_compile=jit)
        for shape in shapes:
            batches = {
                "mixed": rng.choice(np.array([-1, 0, 0, 0, 1], np.int8), size=shape),
                "no_unknown": rng.choice(np.array([-1, 1], np.int8), size=shape),
                "all_unknown": np.zeros(shape, np.int8),
            }
            # Coarse logits make ties, including ties at the threshold.
            z_sets = [rng.normal(size=shape) * 3, rng.integers(-3, 4, size=shape) / 2.0]
            for kind, y in batches.items():
                for z in z_sets:
                    select, unknown_loss = fn(tf.constant(y), tf.constant(z, tf.float32))
                    values = unknown_loss.numpy()  # float32, as this execution computed them
                    rate = min(np.float32(epoch) * np.float32(delta_rel), np.float32(max_rate))
                    k = int(np.ceil(rate * np.float32(y.size)))  # float32, as the loss does
                    ranked = np.sort(values.ravel())[::-1]
                    threshold = ranked[min(k, y.size) - 1] if k > 0 else np.inf
                    expected = (y == 0) * (values >= threshold)
                    np.testing.assert_array_equal(
                        select.numpy(), expected, err_msg=f"{kind} {shape} {epoch} {delta_rel}"
                    )
                    if kind == "no_unknown" or k == 0:
                        assert select.numpy().sum() == 0
                    if k >= y.size:
                        np.testing.assert_array_equal(select.numpy(), y == 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_large_loss_selection_of_low_precision_logits_is_that_of_their_float32_values(dtype):
    loss = losses.LargeLossModification("permanent", delta_rel=0.1)
    loss.epoch.assign(2)
    rng = np.random.default_rng(3)
    y = rng.choice(np.array([-1, 0, 0, 1], np.int8), size=(6, 10))
    z = tf.constant(rng.normal(size=(6, 10)) * 4, dtype)
    np.testing.assert_array_equal(
        loss.selection(y, z).numpy(), loss.selection(y, tf.cast(z, tf.float32)).numpy()
    )


def test_splc_corrects_confident_unknowns_after_warmup():
    def reference(y, z, epoch, tau=0.6, m=1.0, gamma=2.0):
        pos, neg, unk = masks(y)
        p = sig(z)
        loss_pos = (1 - sig(z - m)) ** gamma * sp(-(z - m))
        loss_neg = p**gamma * sp(z)
        c = (p > tau) * (epoch >= 1)
        return (pos * loss_pos + neg * loss_neg + unk * (c * loss_pos + (1 - c) * loss_neg)).mean()

    loss = losses.SelfPacedLossCorrection()
    for epoch in (0, 1):
        loss.epoch.assign(epoch)
        np.testing.assert_allclose(
            float(loss(Y, Z.astype(np.float32))), reference(Y, Z, epoch), rtol=1e-5
        )
