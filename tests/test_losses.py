"""Partial-label losses against NumPy references computed from the docstring formulas."""

import numpy as np
import pytest
import tensorflow as tf

from kpartial import class_stats, losses

# Rows: ordinary, a row with no known label, all kinds of labels with extreme logits.
Y = np.array([[1, -1, 0], [0, 0, 0], [-1, 1, 1]], dtype=np.int8)
Z = np.array([[2.0, -1.0, 0.5], [3.0, -4.0, 1.0], [80.0, -90.0, 100.0]], dtype=np.float32)
PRIORS = np.array([0.1, 0.5, 0.02])


def softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def reference(name, y, z, weight=None, annotations=None, **kw):
    """Returns (loss, dL/dz) from the formulas, in float64; `annotations`: the labels as annotated
    where `y` holds pseudo labels too (only they count in the normalisers)."""
    y = y.astype(np.float64)
    pos, neg, unk = (y > 0) * 1.0, (y < 0) * 1.0, (y == 0) * 1.0
    annotated = (y != 0) * 1.0 if annotations is None else (annotations != 0) * 1.0
    p = sigmoid(z)
    if name == "ignore":
        entry = pos * softplus(-z) + neg * softplus(z)
        grad = pos * (p - 1) + neg * p
        counted = annotated
    elif name == "assume_negative":
        entry = pos * softplus(-z) + (1 - pos) * softplus(z)
        grad = pos * (p - 1) + (1 - pos) * p
        counted = np.ones_like(y)
    else:
        # Two parts, each over its own count: the known labels and the unknown entries.
        pi = kw["priors"][None, :]
        w = np.minimum(((1 - pi) / pi) ** kw["balance"], kw["max_positive_weight"])
        lam = kw["unknown_weight"]
        weight = np.ones_like(y) if weight is None else np.broadcast_to(weight, y.shape)
        known_norm = max((weight * annotated).sum(), 1.0)
        unknown_norm = max((weight * (1.0 - annotated)).sum(), 1.0)
        # Known negatives: ASL's p_m^gamma (-log(1 - p_m)), p_m = max(p - m, 0); plain BCE at 0, 0.
        gamma, m = kw.get("negative_focusing", 0.0), kw.get("negative_margin", 0.0)
        q = np.maximum(p - m, 0.0)
        # -log(1 - q), and (1 - p) / (1 - q), exact where m = 0 and p rounds to 1.
        log_term = softplus(z) if m == 0 else -np.log1p(-q)
        ratio = 1.0 if m == 0 else (1 - p) / (1 - q)
        negative_loss = q**gamma * log_term if (gamma or m) else softplus(z)
        focus_grad = gamma * np.where(q > 0, np.where(q > 0, q, 1.0) ** (gamma - 1), 0.0)
        negative_grad = (
            (focus_grad * log_term * (1 - p) + q**gamma * ratio) * p * (p > m)
            if (gamma or m)
            else p
        )
        known = weight * (w * pos * softplus(-z) + neg * negative_loss)
        u = np.asarray(kw.get("unknown_priors", kw["priors"]))[None, :]
        unknown = weight * lam * unk * (u * softplus(-z) + (1 - u) * softplus(z))
        value = known.sum() / known_norm + unknown.sum() / unknown_norm
        grad = weight * (
            (w * pos * (p - 1) + neg * negative_grad) / known_norm
            + lam * unk * (p - u) / unknown_norm
        )
        return value, grad
    if weight is not None:
        entry, grad, counted = entry * weight, grad * weight, counted * weight
    norm = max(counted.sum(), 1.0)
    return entry.sum() / norm, grad / norm


KPARTIAL_KW = {
    "priors": PRIORS,
    "balance": 0.5,
    "unknown_weight": 0.3,
    "max_positive_weight": 5.0,
    "negative_focusing": 3.0,
    "negative_margin": 0.05,
}
UNFOCUSED_KW = {**KPARTIAL_KW, "negative_focusing": 0.0, "negative_margin": 0.0}
UNKNOWN_RATE_KW = {**KPARTIAL_KW, "unknown_priors": [0.01, 0.2, 0.001]}
MARGIN_ONLY_KW = {**KPARTIAL_KW, "negative_focusing": 0.0}
FRACTIONAL_FOCUSING_KW = {**KPARTIAL_KW, "negative_focusing": 0.5, "negative_margin": 0.0}
CASES = [
    ("ignore", losses.IgnoreUnknownBCE(), {}),
    ("assume_negative", losses.AssumeNegativeBCE(), {}),
    ("kpartial", losses.StatisticsWeightedLoss(**KPARTIAL_KW), KPARTIAL_KW),
    ("kpartial_unfocused", losses.StatisticsWeightedLoss(**UNFOCUSED_KW), UNFOCUSED_KW),
    ("kpartial_unknown_rates", losses.StatisticsWeightedLoss(**UNKNOWN_RATE_KW), UNKNOWN_RATE_KW),
    ("kpartial_margin_only", losses.StatisticsWeightedLoss(**MARGIN_ONLY_KW), MARGIN_ONLY_KW),
    (
        "kpartial_fractional_focusing",
        losses.StatisticsWeightedLoss(**FRACTIONAL_FOCUSING_KW),
        FRACTIONAL_FOCUSING_KW,
    ),
]


@pytest.fixture(params=["dense", "gathered"])
def known_terms(request, monkeypatch):
    """kpartial's loss computes its known labels' terms over [B, C] or on the gathered known
    entries, by their share of the batch; each test below runs both ways."""
    monkeypatch.setattr(losses, "GATHER_KNOWN_SHARE", 0.0 if request.param == "dense" else 1.0)


def value_and_grad(loss, y, z, sample_weight=None):
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss(y, z, sample_weight=sample_weight)
    return float(value), tape.gradient(value, z).numpy()


@pytest.mark.parametrize("name,loss,kw", CASES, ids=[c[0] for c in CASES])
def test_value_and_gradient_match_numpy(name, loss, kw, known_terms):
    value, grad = value_and_grad(loss, Y, Z)
    ref_value, ref_grad = reference(name, Y, Z, **kw)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name,loss,kw", CASES, ids=[c[0] for c in CASES])
def test_per_class_weight_removes_a_class(name, loss, kw, known_terms):
    weight = np.array([[1.0, 0.0, 1.0]], dtype=np.float32)
    value, grad = value_and_grad(loss, Y, Z, sample_weight=weight)
    ref_value, ref_grad = reference(name, Y, Z, weight=weight, **kw)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
    assert np.all(grad[:, 1] == 0.0)


@pytest.mark.parametrize("name,loss,kw", CASES, ids=[c[0] for c in CASES])
def test_per_example_weight(name, loss, kw, known_terms):
    weight = np.array([1.0, 0.0, 2.0], dtype=np.float32)
    value, grad = value_and_grad(loss, Y, Z, sample_weight=weight)
    ref_value, ref_grad = reference(name, Y, Z, weight=weight[:, None], **kw)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name,loss,kw", CASES, ids=[c[0] for c in CASES])
def test_scalar_weight(name, loss, kw, known_terms):
    value, grad = value_and_grad(loss, Y, Z, sample_weight=np.float32(2.0))
    ref_value, ref_grad = reference(name, Y, Z, weight=np.float32(2.0), **kw)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name,loss,kw", CASES, ids=[c[0] for c in CASES])
def test_per_entry_weight(name, loss, kw, known_terms):
    # The shape of a pseudo-label weight: each entry its own.
    weight = np.array([[1.0, 0.5, 0.0], [2.0, 1.0, 0.5], [0.5, 1.0, 2.0]], dtype=np.float32)
    value, grad = value_and_grad(loss, Y, Z, sample_weight=weight)
    ref_value, ref_grad = reference(name, Y, Z, weight=weight, **kw)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "name,loss,kw", CASES[:1] + CASES[2:4], ids=["ignore", "kpartial", "unfocused"]
)
def test_pseudo_labels_do_not_count_as_annotations(name, loss, kw, known_terms):
    # Two unknown entries filled in (a pseudo positive and a pseudo negative, weight 0.5): their
    # terms join the known part, whose normaliser counts the annotations alone.
    targets = Y.copy()
    unknown = np.argwhere(Y == 0)
    targets[tuple(unknown[0])], targets[tuple(unknown[1])] = 1, -1
    weight = np.where((Y == 0) & (targets != 0), 0.5, 1.0).astype(np.float32)
    z = tf.constant(Z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss.normalised(*loss.sums(targets, z, weight, annotations=Y), len(Y))
    ref_value, ref_grad = reference(name, targets, Z, weight=weight, annotations=Y, **kw)
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(value, z).numpy(), ref_grad, rtol=1e-4, atol=1e-7)
    counted = weight * (Y != 0)
    assert float(loss.sums(targets, z, weight, annotations=Y)[1][0]) == pytest.approx(counted.sum())


def test_masked_losses_are_zero_without_known_labels():
    y = np.zeros((4, 3), np.int8)
    z = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    for loss in (
        losses.IgnoreUnknownBCE(),
        losses.StatisticsWeightedLoss(PRIORS, unknown_weight=0),
    ):
        value, grad = value_and_grad(loss, y, z)
        assert value == 0.0 and np.all(grad == 0.0)
    # With the prior term, an all-unknown batch is its unknown part alone: a prior-pulling mean.
    value, _ = value_and_grad(losses.StatisticsWeightedLoss(**KPARTIAL_KW), y, z)
    np.testing.assert_allclose(value, reference("kpartial", y, z, **KPARTIAL_KW)[0], rtol=1e-5)


def test_kpartial_without_weighting_or_prior_term_is_masked_bce():
    plain = losses.StatisticsWeightedLoss(
        PRIORS, balance=0.0, unknown_weight=0.0, negative_focusing=0.0, negative_margin=0.0
    )
    np.testing.assert_allclose(
        float(plain(Y, Z)), float(losses.IgnoreUnknownBCE()(Y, Z)), rtol=1e-6
    )


def test_call_gives_per_example_values_whose_mean_is_the_loss():
    loss = losses.StatisticsWeightedLoss(**KPARTIAL_KW)
    per_example = loss.call(tf.constant(Y), tf.constant(Z)).numpy()
    assert per_example.shape == (3,)
    np.testing.assert_allclose(per_example.mean(), float(loss(Y, Z)), rtol=1e-5)


def test_functions_match_classes():
    np.testing.assert_allclose(
        float(losses.ignore_unknown_bce(Y, Z)), float(losses.IgnoreUnknownBCE()(Y, Z))
    )
    np.testing.assert_allclose(
        float(losses.assume_negative_bce(Y, Z)), float(losses.AssumeNegativeBCE()(Y, Z))
    )
    np.testing.assert_allclose(
        float(losses.statistics_weighted_loss(Y, Z, **KPARTIAL_KW)),
        float(losses.StatisticsWeightedLoss(**KPARTIAL_KW)(Y, Z)),
    )


def test_get_by_method_name():
    stats = class_stats.ClassStatistics.from_labels(Y, ["a", "b", "c"])
    assert isinstance(losses.get("ignore"), losses.IgnoreUnknownBCE)
    assert isinstance(losses.get("assume_negative"), losses.AssumeNegativeBCE)
    kp = losses.get("kpartial", stats, balance=0.25)
    assert isinstance(kp, losses.StatisticsWeightedLoss) and kp.balance == 0.25
    np.testing.assert_allclose(kp.priors, stats.priors)
    with pytest.raises(ValueError, match="class statistics"):
        losses.get("kpartial")
    with pytest.raises(ValueError, match="unknown loss 'nope'; known: kpartial, ignore"):
        losses.get("nope")


def test_get_gives_kpartial_the_unknown_entries_rate_of_the_statistics():
    stats = class_stats.ClassStatistics(
        ("a", "b", "c"), np.ones(3), np.ones(3), PRIORS, unknown_priors=np.array([0.01, 0.2, 0.3])
    )
    kp = losses.get("kpartial", stats)
    assert kp.unknown_priors == [0.01, 0.2, 0.3] and kp.priors == PRIORS.tolist()
    same = class_stats.ClassStatistics(("a", "b", "c"), np.ones(3), np.ones(3), PRIORS)
    assert losses.get("kpartial", same).unknown_priors is None  # the priors themselves
    with pytest.raises(ValueError, match="has no option 'unknown_priors'"):
        losses.get("kpartial", stats, unknown_priors=[0.5, 0.5, 0.5])


def test_get_focuses_kpartial_negatives_as_asl_when_the_labels_are_complete():
    partial = class_stats.ClassStatistics.from_labels(Y, ["a", "b", "c"])
    complete = class_stats.ClassStatistics.from_labels(np.where(Y == 0, -1, Y), ["a", "b", "c"])
    assert not partial.complete and complete.complete
    assert losses.get("kpartial", partial).negative_focusing == 2.0
    assert losses.get("kpartial", complete).negative_focusing == 4.0
    assert losses.get("kpartial", complete, negative_focusing=1.0).negative_focusing == 1.0


def test_get_rejects_options_the_loss_does_not_have():
    message = (
        "loss 'asl' has no option 'gama'; options: gamma_negative, gamma_positive, margin, name, "
        "unknown"
    )
    with pytest.raises(ValueError, match=f"^{message}$"):
        losses.get("asl", gama=2.0)
    with pytest.raises(ValueError, match="no options 'a', 'b'"):
        losses.get("hill", b=1, a=2)
    stats = class_stats.ClassStatistics.from_labels(Y, ["a", "b", "c"])
    with pytest.raises(ValueError, match="has no option 'priors'"):  # priors come from stats
        losses.get("kpartial", stats, priors=[0.5] * 3)
    with pytest.raises(ValueError, match="has no option 'mode'; options: delta_rel, max_rate"):
        losses.get("ll_r", mode="temporary")  # the mode is the name
    assert losses.get("asl", name="mine").name == "mine"


@pytest.mark.parametrize("priors", [[], [0.0, 0.5], [1.0], [0.5, float("nan")]])
def test_bad_priors_are_rejected(priors):
    with pytest.raises(ValueError, match="priors"):
        losses.StatisticsWeightedLoss(priors)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_kpartial_gathered_known_terms_compile(jit_compile, known_terms):
    # The gathered known entries have a shape known only at run time; XLA bounds it.
    loss = losses.StatisticsWeightedLoss(**KPARTIAL_KW)
    weight = tf.constant([[1.0, 0.0, 1.0]])

    @tf.function(jit_compile=jit_compile)
    def step(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(Y, z, sample_weight=weight)
        return value, tape.gradient(value, z)

    value, grad = step(tf.constant(Z))
    ref_value, ref_grad = reference("kpartial", Y, Z, weight=weight.numpy(), **KPARTIAL_KW)
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-4, atol=1e-7)
