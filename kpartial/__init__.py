"""kpartial: multi-label training on partial labels {+1, -1, 0} for Keras 3 / TensorFlow.

The public Python API:

- `kpartial.data` (`load`, `MultiLabelData`), `ClassStatistics`;
- `kpartial.losses` (the loss classes, `LOSSES` and `get`), `kpartial.models`;
- `PartialLabelModel`, `EpochClock`, `PseudoLabelCallback`, `LabelPruningCallback`;
- `kpartial.metrics` (NumPy) and the Keras metrics `MaskedF1`, `MaskedPrecisionAtK`,
  `MaskedAveragePrecision` (these take logits by default, as the losses do).

Importing the package registers every serializable kpartial class (losses, metrics, layers) with
Keras, so `keras.models.load_model("network.keras")` works after `import kpartial` alone.
"""

import importlib.metadata

from kpartial import data, keras_metrics, losses, metrics, models
from kpartial.class_stats import ClassStatistics
from kpartial.keras_metrics import MaskedAveragePrecision, MaskedF1, MaskedPrecisionAtK
from kpartial.label_pruning import LabelPruningCallback
from kpartial.partial_model import EpochClock, PartialLabelModel
from kpartial.pseudo_labels import PseudoLabelCallback

try:
    __version__ = importlib.metadata.version("kpartial")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ClassStatistics",
    "EpochClock",
    "LabelPruningCallback",
    "MaskedAveragePrecision",
    "MaskedF1",
    "MaskedPrecisionAtK",
    "PartialLabelModel",
    "PseudoLabelCallback",
    "__version__",
    "data",
    "keras_metrics",
    "losses",
    "metrics",
    "models",
]
