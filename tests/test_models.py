"""Tests of kpartial.models: the MLP, image backbones, local backbone weights, ResNetPreprocess."""

import keras
import numpy as np
import pytest

from kpartial import models


def _backbone_of(network):
    (backbone,) = [layer for layer in network.layers if isinstance(layer, keras.Model)]
    return backbone


def test_build_mlp():
    network = models.build_mlp(6, 4, hidden_units=(8, 5), dropout=0.1, seed=2)
    assert network.input_shape == (None, 6)
    assert network.output_shape == (None, 4)
    assert [layer.units for layer in network.layers if isinstance(layer, keras.layers.Dense)] == [
        8,
        5,
        4,
    ]
    assert network.get_layer("logits").activation is keras.activations.linear
    # Seeded initialisation: the same seed gives the same weights, another seed others.
    same = models.build_mlp(6, 4, hidden_units=(8, 5), dropout=0.1, seed=2)
    other = models.build_mlp(6, 4, hidden_units=(8, 5), dropout=0.1, seed=3)
    for a, b in zip(network.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(network.get_weights()[0], other.get_weights()[0])


def test_resnet50_builds_with_logits_head():
    network = models.build_image_model("resnet50", 5, image_size=(32, 32))
    assert network.input_shape == (None, 32, 32, 3)
    assert network.output_shape == (None, 5)
    assert isinstance(network.get_layer("preprocess"), models.ResNetPreprocess)
    assert network.get_layer("logits").activation is keras.activations.linear
    assert _backbone_of(network).name == "resnet50"
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    logits = network.predict(x, verbose=0)
    assert logits.shape == (2, 5)
    assert np.all(np.isfinite(logits))


def test_backbone_weights_are_loaded(tmp_path):
    saved = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    # Shift every array (BatchNorm constants included) so no value can match a fresh init.
    rng = np.random.default_rng(0)
    saved.set_weights(
        [w + rng.uniform(0.1, 0.2, w.shape).astype(w.dtype) for w in saved.get_weights()]
    )
    path = str(tmp_path / "bb.weights.h5")
    saved.save_weights(path)

    network = models.build_image_model("mobilenet_v3_small", 3, (32, 32), weights_path=path)
    loaded = _backbone_of(network).get_weights()
    expected = saved.get_weights()
    assert len(loaded) == len(expected) > 100
    for a, b in zip(loaded, expected):
        np.testing.assert_array_equal(a, b)

    fresh = _backbone_of(models.build_image_model("mobilenet_v3_small", 3, (32, 32))).get_weights()
    assert len(fresh) == len(expected)
    assert not any(np.array_equal(a, b) for a, b in zip(fresh, expected))

    # The legacy .h5 layout of the keras.applications "*_notop.h5" files loads as well.
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    legacy_path = str(tmp_path / "bb_notop.h5")
    with h5py.File(legacy_path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, saved)
    network = models.build_image_model("mobilenet_v3_small", 3, (32, 32), weights_path=legacy_path)
    for a, b in zip(_backbone_of(network).get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_file_raises(tmp_path):
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(ValueError, match="nope.weights.h5") as info:
        models.build_image_model("mobilenet_v3_small", 3, (32, 32), weights_path=missing)
    assert missing in str(info.value)


def test_unknown_backbone_raises():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'") as info:
        models.build_image_model("vgg16", 3, (32, 32))
    assert "resnet50" in str(info.value) and "mobilenet_v3_small" in str(info.value)


def test_resnet_preprocess_matches_keras_caffe_preprocessing():
    x = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(models.ResNetPreprocess()(x))
    reference = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
    # RGB -> BGR then minus the BGR means: pixel (0, 0) by hand.
    np.testing.assert_allclose(
        ours[0, 0, 0], x[0, 0, 0, ::-1] - [103.939, 116.779, 123.68], atol=1e-4
    )


def test_resnet_preprocess_serialization_round_trip(tmp_path):
    layer = models.ResNetPreprocess(name="preprocess")
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "kpartial>ResNetPreprocess"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is models.ResNetPreprocess
    assert restored.name == "preprocess"
    x = np.random.default_rng(2).uniform(0, 255, (1, 2, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(layer(x))
    )

    # And inside a saved .keras model (what export_workdir loads for image runs).
    inputs = keras.Input((2, 2, 3))
    model = keras.Model(inputs, keras.layers.Flatten()(models.ResNetPreprocess(name="pre")(inputs)))
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(reloaded.get_layer("pre"), models.ResNetPreprocess)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_mlp_layers_of_equal_shape_start_different():
    network = models.build_mlp(16, 3, hidden_units=(16, 16, 16), dropout=0.0, seed=0)
    kernels = [layer.kernel.numpy() for layer in network.layers if hasattr(layer, "kernel")]
    assert not np.array_equal(kernels[1], kernels[2])
    again = models.build_mlp(16, 3, hidden_units=(16, 16, 16), dropout=0.0, seed=0)
    np.testing.assert_array_equal(again.layers[2].kernel.numpy(), kernels[1])  # still seeded


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_small"])
def test_a_backbone_builds_under_mixed_precision_with_float32_logits(backbone):
    with models.dtype_policy("mixed_bfloat16"):
        network = models.build_image_model(backbone, 3, (32, 32), None)
    assert keras.config.dtype_policy().name == "float32"
    logits = network(np.full((1, 32, 32, 3), 128.0, np.float32))
    assert logits.dtype == "float32" and np.all(np.isfinite(np.asarray(logits)))
