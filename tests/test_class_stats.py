"""kpartial.class_stats: per-class counts and priors, from labels and to/from CSV."""

import numpy as np
import pandas as pd
import pytest

from kpartial import class_stats


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
