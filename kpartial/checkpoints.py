"""Checkpoints that survive a kill at any moment, and exact resume from them.

`ResumableBackup` is Keras' `BackupAndRestore` (it saves the whole training state after every
epoch: network weights, optimizer slots and every variable of `PartialLabelModel`: pseudo labels,
active classes, pseudo thresholds, the loss's epoch and the count of finished epochs) with two
changes, each for a case the stock callback gets wrong:

- Atomic writes. The stock callback writes `latest.weights.h5` in place and then a separate
  metadata file; a kill during the first leaves a truncated file, a kill between the two leaves
  weights of epoch k+1 labelled epoch k. Here the weights go to a temporary sibling that
  `os.replace` renames into place, and the epoch lives inside the weights file (the model's
  `epochs_done` variable), so what is on disk is always one consistent, loadable state.
- Restore before `fit`. The stock callback restores in `on_train_begin`, after `fit` has taken
  its dataset; kpartial draws each epoch's data order from (seed, epoch), so the run must know the
  epoch it resumes at before it builds the dataset. `restore` is called by the trainer first, and
  `on_train_begin` does nothing.
"""

import glob
import json
import os

import keras

from kpartial.workdir import replace_atomically, weights_file_bytes, write_atomically

WEIGHTS = "latest.weights.h5"


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """Saves the training state after every epoch into `backup_dir`, atomically, and keeps it.

    Args:
      backup_dir: folder of the checkpoint (a run's `workdir/checkpoint`).
      is_chief: whether this process writes it; the other workers of a cluster only restore.
    """

    def __init__(self, backup_dir, is_chief=True):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.is_chief = is_chief

    @property
    def weights_path(self):
        return self._weights_path

    def restore(self, model):
        """Loads the last checkpoint into `model`, before `fit`.

        Args:
          model: the run's `PartialLabelModel`, built and compiled.

        Returns:
          The number of epochs the checkpoint had finished; 0 when there is no checkpoint.
        """
        if not os.path.isfile(self._weights_path):
            return 0
        with model.distribute_strategy.scope():  # the optimizer's slots are mirrored too
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(self._weights_path)
        return int(model.epochs_done.numpy())

    def on_train_begin(self, logs=None):
        pass  # restored by `restore`, before the dataset was positioned at the resumed epoch

    def _save_model(self):
        if not self.is_chief:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(self.backup_dir, "*.tmp-*.weights.h5")):
            os.remove(stale)  # a write cut short by a kill
        replace_atomically(
            self._weights_path,
            lambda tmp: self.model.save_weights(tmp, overwrite=True),
            suffix=".weights.h5",
            size=weights_file_bytes(self.model, *filter(None, [self.model.optimizer])),
        )
        # For people and tools reading the folder; the loadable truth is the weights file.
        write_atomically(
            self._training_metadata_path,
            json.dumps({"epoch": int(self.model.epochs_done.numpy())}),
        )
