"""Networks: an MLP for feature inputs and `keras.applications` backbones for images.

Networks output logits; probabilities are applied at export. Image networks take float pixels in
[0, 255] and do their backbone's own preprocessing inside the graph, so a SavedModel serves raw
pixels. Backbone weights are never downloaded: `weights_path` loads a local Keras weights file of
the backbone without its top (e.g. `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`).
"""

import contextlib
import os

import keras
from keras import layers


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers under Keras' dtype policy `name` (e.g. "mixed_bfloat16"), then restores the
    global policy; the logits layers of this module stay float32 under any policy."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_mlp(num_features, num_classes, hidden_units=(512,), dropout=0.2, seed=0):
    """Dense-ReLU-Dropout blocks followed by a linear layer of `num_classes` logits.

    Layer i is seeded with `seed + i`: Keras' seeded initialisers are stateless, so one shared seed
    would start equally shaped layers identical.

    Args:
      num_features: D, the width of the input rows.
      num_classes: C, the number of logits.
      hidden_units: the width of each hidden block, input side first; () for a linear model.
      dropout: dropout rate after each hidden block (0 = none).
      seed: seed of the initialisers and dropout layers.
    """
    inputs = keras.Input((num_features,), name="x")
    hidden = inputs
    for i, units in enumerate(hidden_units):
        hidden = layers.Dense(
            units, activation="relu", kernel_initializer=keras.initializers.HeUniform(seed + i)
        )(hidden)
        if dropout:
            hidden = layers.Dropout(dropout, seed=seed + i)(hidden)
    logits = layers.Dense(
        num_classes,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed + len(hidden_units)),
        dtype="float32",  # float32 logits also under a mixed-precision policy
    )(hidden)
    return keras.Model(inputs, logits, name="mlp")


@keras.saving.register_keras_serializable(package="kpartial")
class ResNetPreprocess(layers.Layer):
    """ResNet50's 'caffe' preprocessing of [0, 255] RGB pixels: RGB -> BGR, minus ImageNet means."""

    def call(self, images):
        means = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=images.dtype)
        return keras.ops.flip(images, axis=-1) - means  # in the compute dtype (bfloat16 too)


def _resnet50(image_size):
    base = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(*image_size, 3), pooling="avg"
    )
    return ResNetPreprocess(name="preprocess"), base


def _mobilenet_v3_small(image_size):
    base = keras.applications.MobileNetV3Small(
        include_top=False,
        weights=None,
        input_shape=(*image_size, 3),
        pooling="avg",
        include_preprocessing=True,  # rescales [0, 255] inputs itself
    )
    return None, base


# --backbone name -> function(image_size) -> (preprocessing layer or None, pooled backbone). The
# backbone is built without weights; a local weights file is loaded into it afterwards.
BACKBONES = {"resnet50": _resnet50, "mobilenet_v3_small": _mobilenet_v3_small}


def build_image_model(backbone, num_classes, image_size=(224, 224), weights_path=None):
    """A backbone with global average pooling and a linear head of `num_classes` logits.

    Args:
      backbone: a key of `BACKBONES`.
      num_classes: C.
      image_size: (height, width) of input images.
      weights_path: optional local weights file for the backbone (no top); None = random init.

    Raises:
      ValueError: for an unknown backbone or a missing weights file.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    if weights_path is not None and not os.path.isfile(weights_path):
        raise ValueError(f"backbone weights file not found: {weights_path}")
    preprocess, base = BACKBONES[backbone](tuple(image_size))
    if weights_path is not None:
        base.load_weights(weights_path)
    inputs = keras.Input((*image_size, 3), name="x")
    features = base(preprocess(inputs) if preprocess is not None else inputs)
    logits = layers.Dense(num_classes, name="logits", dtype="float32")(features)
    return keras.Model(inputs, logits, name=f"{backbone}_classifier")
