"""kpartial.class_stats: per-class counts and priors, from labels and to/from CSV."""

import numpy as np
import pandas as pd
import pytest

from kpartial import class_stats, simulate


def test_statistics_from_labels_and_csv_round_trip(tmp_path):
    labels = np.array([[1, -1, 0], [1, 0, 0], [-1, -1, 0]], np.int8)
    stats = class_stats.ClassStatistics.from_labels(labels, ["a", "b", "c"])
    np.testing.assert_array_equal(stats.positives, [2, 0, 0])
    np.testing.assert_array_equal(stats.negatives, [1, 2, 0])
    np.testing.assert_allclose(stats.priors, [3 / 5, 1 / 4, 1 / 2])
    path = tmp_path / "stats.csv"
    stats.to_csv(path)
    # Reading orders the rows by the requested label names.
    restored = class_stats.ClassStatistics.from_csv(path, ("c", "a", "b"))
    np.testing.assert_allclose(restored.priors, [1 / 2, 3 / 5, 1 / 4])
    np.testing.assert_array_equal(restored.positives, [0, 2, 0])


def test_statistics_csv_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"label": ["a"], "positives": [1], "negatives": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="bad.csv.*prior"):
        class_stats.ClassStatistics.from_csv(path, ["a"])
    pd.DataFrame({"label": ["a"], "positives": [1], "negatives": [1], "prior": [0.5]}).to_csv(
        path, index=False
    )
    with pytest.raises(ValueError, match="bad.csv.*'b'"):
        class_stats.ClassStatistics.from_csv(path, ["a", "b"])
    pd.DataFrame({"label": ["a"], "positives": [1], "negatives": [1], "prior": [1.0]}).to_csv(
        path, index=False
    )
    with pytest.raises(ValueError, match="bad.csv.*prior of 'a'"):
        class_stats.ClassStatistics.from_csv(path, ["a"])


def test_statistics_csv_keeps_label_names_as_written_and_rejects_duplicates(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("label,positives,negatives,prior\nNA,1,3,0.25\n01,2,2,0.5\n")
    stats = class_stats.ClassStatistics.from_csv(path, ("01", "NA"))
    np.testing.assert_allclose(stats.priors, [0.5, 0.25])
    path.write_text("label,positives,negatives,prior\na,1,3,0.25\nb,1,1,0.5\na,2,2,0.5\n")
    with pytest.raises(ValueError, match="names.csv: line 4: duplicate label 'a'"):
        class_stats.ClassStatistics.from_csv(path, ("a", "b"))


def _simulated(num_examples, num_classes, known_share, seed=0):
    """Labels with a prior of 0.3, each entry known with probability `known_share[c]`."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random((num_examples, num_classes)) < 0.3, 1, -1)
    known = rng.random((num_examples, num_classes)) < np.asarray(known_share)[None, :]
    return np.where(known, truth, 0).astype(np.int8)


@pytest.mark.parametrize("num_examples", [60, 2000])
def test_labels_missing_at_random_keep_the_priors_for_unknown_entries(num_examples):
    # At 60 examples binomial noise alone spreads the annotated shares by more than 2x.
    labels = _simulated(num_examples, 12, [0.1] * 12)
    stats = class_stats.ClassStatistics.from_labels(labels, [str(c) for c in range(12)])
    np.testing.assert_array_equal(stats.unknown_priors, stats.priors)
    assert "missing at random" in stats.annotation


def test_class_dependent_annotation_takes_known_positives_over_all_examples():
    # Verification of likely classes: the annotated share follows the class (Open Images).
    shares = np.geomspace(0.002, 0.5, 12)
    labels = _simulated(2000, 12, shares)
    stats = class_stats.ClassStatistics.from_labels(labels, [str(c) for c in range(12)])
    np.testing.assert_allclose(stats.unknown_priors, (stats.positives + 1) / 2002)
    assert np.all(stats.unknown_priors < stats.priors)
    assert "annotation depends on the class" in stats.annotation


def test_full_labels_and_csv_statistics_keep_the_priors(tmp_path):
    full = _simulated(50, 4, [1.0] * 4)
    stats = class_stats.ClassStatistics.from_labels(full, list("abcd"))
    assert stats.unknown_priors is stats.priors and stats.annotation == "every entry is annotated"
    assert stats.complete
    one_unknown = full.copy()
    one_unknown[7, 2] = 0
    assert not class_stats.ClassStatistics.from_labels(one_unknown, list("abcd")).complete
    path = tmp_path / "stats.csv"
    class_stats.ClassStatistics.from_labels(
        _simulated(2000, 4, [0.002, 0.01, 0.1, 0.5]), list("abcd")
    ).to_csv(path)
    assert "unknown_prior" in pd.read_csv(path).columns
    restored = class_stats.ClassStatistics.from_csv(path, list("abcd"))
    np.testing.assert_array_equal(restored.unknown_priors, restored.priors)


def test_dense_reads_the_unknown_entries_mean_rate():
    labels = np.where(np.arange(40)[:, None] % 5 < np.array([1, 2]), 1, -1)  # rates 0.2, 0.4
    stats = class_stats.ClassStatistics.from_labels(labels, ["a", "b"])
    assert stats.dense  # mean prior (9 + 17) / 2 / 42 = 0.31
    assert not class_stats.ClassStatistics.from_labels(labels[:, :1] * 0 - 1, ["a"]).dense


def test_missing_labels_says_how_the_unknown_entries_went_missing():
    """Shares 0.02-0.8 read as class-dependent; a user who knows the labels went missing at
    random within each class (assays) or by verification (Open Images) says so."""
    rng = np.random.default_rng(0)
    share = np.geomspace(0.02, 0.8, 10)
    labels = np.where(rng.random((2000, 10)) < 0.2, 1, -1).astype(np.int8)
    labels[rng.random((2000, 10)) >= share] = 0
    names = [str(c) for c in range(10)]
    auto = class_stats.ClassStatistics.from_labels(labels, names)
    assert auto.depends_on_class
    at_random = class_stats.ClassStatistics.from_labels(labels, names, "at_random")
    np.testing.assert_array_equal(at_random.unknown_priors, at_random.priors)
    assert not at_random.depends_on_class and "at_random" in at_random.annotation
    verified = class_stats.ClassStatistics.from_labels(labels, names, "verified")
    positives = (labels > 0).sum(0)
    np.testing.assert_allclose(verified.unknown_priors, (positives + 1) / 2002)


def test_classes_covered_at_random_on_shares_of_their_own_read_as_missing_at_random():
    """Assays screened on different libraries (each class kept on its own share, 0.1-0.5, at
    random within it) read as labels missing at random; classes verified on shares orders of
    magnitude apart (Open Images' candidates) as class-dependent. The factor between them,
    RANDOM_ANNOTATION_SPREAD, was chosen leave-one-set-out (benchmarks/README.md)."""
    rng = np.random.default_rng(0)
    truth = np.where(rng.random((3000, 40)) < 0.1, 1, -1).astype(np.int8)
    covered = simulate.class_coverage(truth, 0.1, 0.5, seed=1)
    stats = class_stats.ClassStatistics.from_labels(covered, [str(c) for c in range(40)])
    assert not stats.depends_on_class, stats.annotation
    shares = np.geomspace(0.002, 0.8, 40)
    verified = np.where(rng.random(truth.shape) < shares, truth, 0).astype(np.int8)
    stats = class_stats.ClassStatistics.from_labels(verified, [str(c) for c in range(40)])
    assert stats.depends_on_class and "more than 16x apart" in stats.annotation
