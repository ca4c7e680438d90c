"""The public Python API: names, version, `.keras` files loading after `import kpartial`, and the
README's "Use from Python" section, run as written."""

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import kpartial

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
ROOT = README.parent


def test_public_names_and_version():
    assert kpartial.__version__ == importlib.metadata.version("kpartial")
    for name in kpartial.__all__:
        assert hasattr(kpartial, name), name
    assert callable(kpartial.data.load) and callable(kpartial.losses.get)
    assert isinstance(kpartial.losses.get("ignore"), kpartial.losses.PartialLabelLoss)
    for cls in (kpartial.MaskedF1, kpartial.MaskedPrecisionAtK, kpartial.MaskedAveragePrecision):
        assert cls is getattr(kpartial.keras_metrics, cls.__name__)


def _run(script, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


SAVE = """
    import keras
    import numpy as np

    from kpartial import keras_metrics, losses, models

    inputs = keras.Input((4, 4, 3))
    features = keras.layers.Flatten()(models.ResNetPreprocess()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(features))
    model.compile(
        optimizer="adam",
        loss=losses.StatisticsWeightedLoss([0.1, 0.5, 0.2], balance=0.25),
        metrics=[keras_metrics.MaskedF1(3), keras_metrics.MaskedAveragePrecision(3)],
    )
    x = np.random.default_rng(0).uniform(0, 255, (8, 4, 4, 3)).astype("float32")
    y = np.array([[1, -1, 0]] * 8, "int8")
    model.fit(x, y, epochs=1, verbose=0)
    model.save("x.keras")
    np.save("x.npy", x)
    np.save("logits.npy", model.predict(x, verbose=0))
"""

LOAD = """
    import sys

    import keras
    import numpy as np

    try:  # without kpartial, Keras cannot find its classes
        keras.models.load_model("x.keras")
        raise SystemExit("loaded without kpartial")
    except (TypeError, ValueError) as e:
        assert "Could not locate class" in str(e), e
    assert not any(name.startswith("kpartial") for name in sys.modules)

    import kpartial  # noqa: F401  (all a loading process needs)

    model = keras.models.load_model("x.keras")
    assert type(model.loss).__name__ == "StatisticsWeightedLoss", model.loss
    assert model.loss.balance == 0.25
    logits = model.predict(np.load("x.npy"), verbose=0)
    np.testing.assert_allclose(logits, np.load("logits.npy"), rtol=1e-6)
    print("loaded")
"""


def test_a_keras_file_with_kpartial_classes_loads_after_import_kpartial_alone(tmp_path):
    _run(SAVE, tmp_path)
    assert _run(LOAD, tmp_path).strip().endswith("loaded")


def _readme_python_blocks():
    text = README.read_text()
    section = re.search(r"^## Use from Python\n(.*?)^## ", text, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no '## Use from Python' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE)
    assert blocks, "the section has no ```python block"
    return blocks


def test_readme_use_from_python_runs(tmp_path):
    printed = _run("\n".join(_readme_python_blocks()), tmp_path).splitlines()
    assert (tmp_path / "network.keras").is_file()
    assert (tmp_path / "workdirs" / "from_python" / "metrics.json").is_file()
    assert len(printed) == 4  # one list of label names per predicted example
    for line in printed:
        assert set(re.findall(r"'([^']*)'", line)) <= {"cat", "dog", "car"}
