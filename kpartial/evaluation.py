"""Per-epoch evaluation on the test set, logged for TensorBoard (annotated entries only)."""

import keras
import numpy as np

from kpartial import metrics
from kpartial.partial_model import predict_probabilities


class EvaluationCallback(keras.callbacks.Callback):
  """Adds `test_map`, `test_cf1`, `test_of1` to the epoch logs every `every` epochs and at the end.

  Metrics count only annotated test entries (label != 0).
  """

  def __init__(self, dataset, labels, every=1, total_epochs=None):
    super().__init__()
    self.dataset, self.labels = dataset, np.asarray(labels)
    self.every, self.total_epochs = max(1, every), total_epochs
    self.last = {}

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every and epoch + 1 != self.total_epochs:
      return
    result = metrics.evaluate(predict_probabilities(self.model, self.dataset), self.labels)
    self.last = {"test_map": result["map"], "test_cf1": result["cf1"], "test_of1": result["of1"]}
    if logs is not None:
      logs.update(self.last)
