"""kpartial.simulate: the seeded partial-label schemes, simulation files, tools/simulate.py."""

import json

import numpy as np
import pytest

from kpartial import data, simulate
from kpartial.sparse_labels import SparseLabels, as_dense
from tests.helpers import DENSE, INDPTR


def _random_labels(n=40, c=7, seed=0, known=0.7):
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((n, c)) < 0.35, 1, -1)
    return np.where(rng.random((n, c)) < known, signs, 0).astype(np.int8)


def _assert_subset(kept, labels):
    """kept entries equal the originals; unknown stays unknown."""
    kept, labels = as_dense(kept), as_dense(labels)
    assert kept.dtype == np.int8 and kept.shape == labels.shape
    known = kept != 0
    np.testing.assert_array_equal(kept[known], labels[known])
    assert not np.any(kept[labels == 0])


def test_keep_fraction_is_seeded_and_keeps_about_the_fraction():
    labels = np.where(np.random.default_rng(0).random((400, 50)) < 0.1, 1, -1).astype(np.int8)
    kept = simulate.keep_fraction(labels, 0.3, seed=7)
    assert kept.dtype == np.int8
    np.testing.assert_array_equal(kept, simulate.keep_fraction(labels, 0.3, seed=7))
    assert not np.array_equal(kept, simulate.keep_fraction(labels, 0.3, seed=8))
    known = kept != 0
    assert abs(known.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(kept[known], labels[known])  # kept entries are untouched


def test_keep_fraction_leaves_unknown_entries_unknown_and_one_keeps_all():
    labels = np.array([[1, 0, -1], [0, 1, 0]], np.int8)
    np.testing.assert_array_equal(simulate.keep_fraction(labels, 1.0, 0), labels)
    assert np.all(simulate.keep_fraction(labels, 0.5, 0)[labels == 0] == 0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="known_fraction"):
            simulate.keep_fraction(labels, bad, 0)


def test_keep_fraction_dense_and_sparse_keep_a_subset_seeded():
    labels = _random_labels(200, 10)
    for input_ in (labels, SparseLabels.from_dense(labels)):
        kept = simulate.keep_fraction(input_, 0.4, seed=5)
        assert isinstance(kept, type(input_))
        _assert_subset(kept, labels)
        again = simulate.keep_fraction(input_, 0.4, seed=5)
        np.testing.assert_array_equal(as_dense(kept), as_dense(again))
        other = simulate.keep_fraction(input_, 0.4, seed=6)
        assert not np.array_equal(as_dense(kept), as_dense(other))
        share = np.count_nonzero(as_dense(kept)) / np.count_nonzero(labels)
        assert 0.3 < share < 0.5


def test_keep_fraction_sparse_draws_one_number_per_known_entry():
    labels = _random_labels(30, 6)
    sparse = SparseLabels.from_dense(labels)
    expected_keep = np.random.default_rng(11).random(sparse.num_known) < 0.5
    kept = simulate.keep_fraction(sparse, 0.5, 11)
    np.testing.assert_array_equal(kept.to_dense(), sparse.with_entries(expected_keep).to_dense())
    assert simulate.keep_fraction(sparse, 1.0, 0) is sparse
    with pytest.raises(ValueError, match=r"known_fraction must be in \(0, 1\], got 0.0"):
        simulate.keep_fraction(sparse, 0.0, 0)


def test_per_image_fraction_exact_quota_per_row():
    # Known labels per row: 0, 1, 3, 4, 10. With fraction 0.25: rint(0, .25, .75, 1, 2.5) = 0, 0,
    # 1, 1, 2 (round half to even), at least one where a row has any -> 0, 1, 1, 1, 2.
    labels = np.zeros((5, 10), np.int8)
    labels[1, 4] = -1
    labels[2, [0, 5, 9]] = [1, -1, 1]
    labels[3, [1, 2, 3, 4]] = [-1, -1, 1, -1]
    labels[4] = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1]
    for seed in range(5):
        kept = simulate.per_image_fraction(labels, 0.25, seed)
        _assert_subset(kept, labels)
        np.testing.assert_array_equal((kept != 0).sum(axis=1), [0, 1, 1, 1, 2])
    kept = simulate.per_image_fraction(labels, 1.0, 0)
    np.testing.assert_array_equal(kept, labels)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 1.5"):
        simulate.per_image_fraction(labels, 1.5, 0)


def test_per_class_count_exact_quota_per_class_and_sign():
    labels = _random_labels(60, 6, seed=2)
    count = 3
    kept = simulate.per_class_count(labels, count, seed=4)
    _assert_subset(kept, labels)
    np.testing.assert_array_equal(
        (kept == 1).sum(axis=0), np.minimum((labels == 1).sum(axis=0), count)
    )
    np.testing.assert_array_equal(
        (kept == -1).sum(axis=0), np.minimum((labels == -1).sum(axis=0), count)
    )
    # A class with fewer keeps all of them.
    few = np.array([[1, -1], [-1, -1], [0, -1], [-1, 1]], np.int8)
    np.testing.assert_array_equal(simulate.per_class_count(few, 5, 0), few)
    kept = simulate.per_class_count(few, 1, 0)
    np.testing.assert_array_equal((kept == 1).sum(axis=0), [1, 1])
    np.testing.assert_array_equal((kept == -1).sum(axis=0), [1, 1])
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        simulate.per_class_count(few, 0, 0)


def test_per_image_count_exact_quota_per_row_and_single_positive():
    labels = _random_labels(50, 8, seed=3)
    labels[7] = 0  # a row without labels
    labels[8] = -1  # a row without positives
    kept = simulate.per_image_count(labels, 2, 1, seed=9)
    _assert_subset(kept, labels)
    np.testing.assert_array_equal((kept == 1).sum(axis=1), np.minimum((labels == 1).sum(axis=1), 2))
    np.testing.assert_array_equal(
        (kept == -1).sum(axis=1), np.minimum((labels == -1).sum(axis=1), 1)
    )
    single = simulate.per_image_count(labels, 1, 0, seed=9)
    _assert_subset(single, labels)
    assert not np.any(single == -1)
    np.testing.assert_array_equal((single == 1).sum(axis=1), ((labels == 1).sum(axis=1) > 0))
    assert not np.any(single[7]) and not np.any(single[8])
    for positives, negatives in ((0, 0), (-1, 1), (1, -1)):
        with pytest.raises(ValueError, match="need positives, negatives >= 0, not both 0"):
            simulate.per_image_count(labels, positives, negatives, 0)


RANKED = [
    ("per_image_fraction", {"fraction": 0.5}),
    ("per_class_count", {"count": 2}),
    ("per_image_count", {"positives": 1, "negatives": 0}),
    ("per_image_count", {"positives": 1, "negatives": 2}),
]


@pytest.mark.parametrize("scheme, params", RANKED)
def test_ranked_schemes_dense_and_sparse_agree_and_are_seeded(scheme, params):
    labels = _random_labels(40, 7, seed=1)
    sparse = SparseLabels.from_dense(labels)
    dense_kept = simulate.simulate(labels, scheme, 3, **params)
    sparse_kept = simulate.simulate(sparse, scheme, 3, **params)
    assert isinstance(dense_kept, np.ndarray) and dense_kept.dtype == np.int8
    assert isinstance(sparse_kept, SparseLabels)
    np.testing.assert_array_equal(sparse_kept.to_dense(), dense_kept)
    _assert_subset(dense_kept, labels)
    np.testing.assert_array_equal(simulate.simulate(labels, scheme, 3, **params), dense_kept)
    assert not np.array_equal(simulate.simulate(labels, scheme, 4, **params), dense_kept)


def test_simulate_checks_scheme_and_parameters():
    labels = _random_labels(5, 3)
    with pytest.raises(ValueError, match="unknown scheme 'drop_all'"):
        simulate.simulate(labels, "drop_all", 0)
    with pytest.raises(ValueError, match=r"missing \['negatives'\], unexpected \[\]"):
        simulate.simulate(labels, "per_image_count", 0, positives=1)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['count'\]"):
        simulate.simulate(labels, "keep_fraction", 0, fraction=0.5, count=2)
    np.testing.assert_array_equal(
        simulate.simulate(labels, "keep_fraction", 7, fraction=0.5),
        simulate.keep_fraction(labels, 0.5, 7),
    )


def _full_data(labels, names=("a", "b", "c", "d")):
    return data.MultiLabelData(
        labels=labels,
        label_names=names,
        features=np.zeros((labels.shape[0], 2), np.float32),
        source="npz:/tmp/full.npz",
    )


def _save(path, labels, names=("a", "b", "c", "d")):
    simulate.save(
        path,
        labels,
        scheme="per_image_count",
        seed=3,
        params={"positives": 1, "negatives": 0},
        source="npz:/tmp/full.npz",
        label_names=names,
    )


def test_save_load_round_trip_dense_and_sparse(tmp_path):
    full = _full_data(DENSE)
    kept = simulate.per_image_count(DENSE, 1, 0, seed=3)
    path = tmp_path / "sub" / "sim.npz"  # the folder is created
    _save(path, kept)
    labels, meta = simulate.load(path, full)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, kept)
    assert meta == {
        "scheme": "per_image_count",
        "seed": 3,
        "params": {"positives": 1, "negatives": 0},
        "source": "npz:/tmp/full.npz",
        "label_names": ["a", "b", "c", "d"],
    }
    sparse_full = _full_data(SparseLabels.from_dense(DENSE))
    labels, _ = simulate.load(path, sparse_full)
    assert isinstance(labels, SparseLabels)
    np.testing.assert_array_equal(labels.to_dense(), kept)


def test_load_rejects_a_simulation_of_other_data(tmp_path):
    full = _full_data(DENSE)
    path = tmp_path / "sim.npz"
    _save(path, DENSE, names=("a", "b", "c", "e"))
    with pytest.raises(ValueError, match=r"sim\.npz: classes differ from those of npz:/tmp/full"):
        simulate.load(path, full)
    _save(path, DENSE[:4])
    with pytest.raises(ValueError, match=r"sim\.npz: shape \(4, 4\) differs from .* \(5, 4\)"):
        simulate.load(path, full)
    flipped = DENSE.copy()
    flipped[3, 0] = 1  # the data has -1 there
    _save(path, flipped)
    with pytest.raises(ValueError, match=r"sim\.npz: row 3 keeps a label .* does not have"):
        simulate.load(path, full)
    invented = DENSE.copy()
    invented[2, 1] = -1  # row 2 has no labels in the data
    _save(path, invented)
    with pytest.raises(ValueError, match=r"sim\.npz: row 2 keeps a label .* does not have"):
        simulate.load(path, full)
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"sim\.npz: not a kpartial simulation file"):
        simulate.load(path, full)


def test_saved_meta_is_json(tmp_path):
    path = tmp_path / "sim.npz"
    _save(path, SparseLabels.from_dense(DENSE))
    with np.load(path) as npz:
        assert json.loads(str(npz["meta"]))["scheme"] == "per_image_count"
        np.testing.assert_array_equal(npz["indptr"], INDPTR)


def _tiny_npz(path):
    y = np.array([[1, -1, 1], [-1, 1, 0], [1, 1, -1], [-1, -1, 1], [0, 1, 1]], np.int8)
    np.savez(path, x=np.arange(10, dtype=np.float32).reshape(5, 2), y=y)
    return y


def test_simulate_cli_writes_a_loadable_simulation(tmp_path, run_tool):
    y = _tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "sims" / "single.npz"
    done = run_tool(
        "simulate.py",
        f"--data=npz:{tmp_path / 'tiny.npz'}",
        "--scheme=per_image_count",
        "--positives=1",
        "--negatives=0",
        "--seed=2",
        f"--out={out}",
    )
    assert done.returncode == 0, done.stderr
    assert "kept 5 of 13 known labels" in done.stdout
    full = data.load("npz", str(tmp_path / "tiny.npz"))
    labels, meta = simulate.load(out, full)
    np.testing.assert_array_equal(labels, simulate.per_image_count(y, 1, 0, seed=2))
    assert meta["scheme"] == "per_image_count" and meta["seed"] == 2
    assert meta["params"] == {"positives": 1, "negatives": 0}


def test_simulate_cli_rejects_a_parameter_of_another_scheme(tmp_path, run_tool):
    _tiny_npz(tmp_path / "tiny.npz")
    done = run_tool(
        "simulate.py",
        f"--data=npz:{tmp_path / 'tiny.npz'}",
        "--scheme=per_image_count",
        "--fraction=0.2",
        f"--out={tmp_path / 'never.npz'}",
    )
    assert done.returncode != 0
    assert "--scheme=per_image_count needs --positives, --negatives" in done.stderr
    assert "does not take ['--fraction']" in done.stderr
    assert not (tmp_path / "never.npz").exists()


# ----------------------------------------------------------------------------
# Labels missing for a reason: verified candidates and per-class coverage


def _full_labels(n=3000, c=30, seed=0):
    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.02, 0.4, c)
    return np.where(rng.random((n, c)) < rates, 1, -1).astype(np.int8)


def _auc(positive_scores, negative_scores):
    ranks = np.argsort(np.argsort(np.r_[positive_scores, negative_scores])) + 1
    n_pos, n_neg = len(positive_scores), len(negative_scores)
    return (ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_verified_candidates_verifies_about_k_per_example_and_favours_positives():
    labels = _full_labels()
    kept = simulate.verified_candidates(labels, 4, 0.9, seed=3)
    _assert_subset(kept, labels)
    per_row = (kept != 0).sum(1)
    assert per_row.min() >= 1 and abs(per_row.mean() - 4) < 0.15  # k_i ~ Poisson(4), at least 1
    # The detector verifies a true positive far more often than a negative, and misses some.
    verified = kept != 0
    positive_rate = verified[labels == 1].mean()
    negative_rate = verified[labels == -1].mean()
    assert positive_rate > 4 * negative_rate and positive_rate < 0.95
    np.testing.assert_array_equal(kept, simulate.verified_candidates(labels, 4, 0.9, seed=3))
    sparse = simulate.verified_candidates(SparseLabels.from_dense(labels), 4, 0.9, seed=3)
    np.testing.assert_array_equal(as_dense(sparse), kept)


def test_verified_candidates_detector_auc_is_about_a_within_each_class():
    """Per class, verification follows the detector's score, whose AUC is A_c ~ A +- 0.05: the
    verified share of positives rises with A."""
    labels = _full_labels(n=4000, c=10)
    shares = []
    for auc in (0.7, 0.9, 0.99):
        kept = simulate.verified_candidates(labels, 3, auc, seed=1)
        shares.append((kept == 1).sum() / (labels == 1).sum())
    assert shares[0] < shares[1] < shares[2]


def test_class_coverage_keeps_a_share_per_class_independent_of_the_value():
    labels = _full_labels(n=20000, c=20)
    kept = simulate.class_coverage(labels, 0.02, 0.8, seed=5)
    _assert_subset(kept, labels)
    share = (kept != 0).mean(0)
    assert share.min() > 0.015 and share.max() < 0.82 and share.max() / share.min() > 5
    # Within a class, positives and negatives are kept at the same rate.
    for c in range(20):
        kept_positive = (kept[:, c] == 1).sum() / (labels[:, c] == 1).sum()
        assert abs(kept_positive - share[c]) < 4 * np.sqrt(share[c] / (labels[:, c] == 1).sum())
    with pytest.raises(ValueError, match="min_fraction <= max_fraction"):
        simulate.class_coverage(labels, 0.5, 0.1, seed=0)


def test_describe_counts_what_a_scheme_left():
    labels = np.array([[1, -1, 1], [1, -1, -1]], np.int8)
    kept = np.array([[1, 0, 0], [0, -1, 0]], np.int8)
    left = simulate.describe(labels, kept)
    assert left["known_share"] == pytest.approx(2 / 6)
    assert left["positives_unknown"] == pytest.approx(2 / 3)
    assert left["class_known_share"][1] == pytest.approx(0.5)


def test_simulate_cli_prints_what_the_new_schemes_left(tmp_path, run_tool):
    path = tmp_path / "d.npz"
    labels = _full_labels(n=200, c=12)
    np.savez(path, x=np.zeros((200, 2), np.float32), y=labels)
    proc = run_tool(
        "simulate.py",
        f"--data=npz:{path}",
        "--scheme=verified_candidates",
        "--candidates=3",
        "--detector_auc=0.9",
        f"--out={tmp_path / 's.npz'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "of the annotated positives left unknown" in proc.stdout
    assert "known share per class p10/p50/p90" in proc.stdout
