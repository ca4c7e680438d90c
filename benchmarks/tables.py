"""What every benchmark does last: write its markdown table to `--out` and print it."""

import os


def write_table(path, lines):
    """Writes `lines` (markdown) to `path`, creating its folder, and prints them."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def method_variant(spec):
    """(method, {field: value}) of a `--methods` entry: METHOD, or a variant
    METHOD:FIELD=VALUE;FIELD=VALUE (values as written)."""
    name, _, fields = spec.partition(":")
    return name, dict(item.split("=", 1) for item in filter(None, fields.split(";")))


# The Mulan sets' train and test files under ../shared/data/mulan.
MULAN_FILES = {
    "yeast": ("yeast/yeast-train.arff", "yeast/yeast-test.arff"),
    "enron": ("enron/enron-train.arff", "enron/enron-test.arff"),
    "bibtex": ("bibtex/bibtex-train.arff", "bibtex/bibtex-test.arff"),
    "corel5k": ("corel5k/Corel5k-train-sparse.arff", "corel5k/Corel5k-test-sparse.arff"),
    "emotions": ("emotions/emotions-train.arff", "emotions/emotions-test.arff"),
    "scene": ("scene/scene-train.arff", "scene/scene-test.arff"),
    "medical": ("medical/medical-train.arff", "medical/medical-test.arff"),
}
