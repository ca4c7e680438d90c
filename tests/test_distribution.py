"""tf.distribute: sharding, gradients and state across replicas (kpartial.distribution).

The checks that need two replicas run in one subprocess with two logical CPU devices
(tests/distributed_checks.py); two separate worker processes are tests/test_multi_worker.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, distribution, input_sources, pipeline, training
from kpartial.config import Config
from tests.helpers import JPEG, ROOT, write


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "distributed_checks.py"), str(root)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_two_logical_devices_are_two_replicas(checks):
    assert checks["devices"] == 2
    assert checks["batches"] == {"same_ids": True, "same_labels": True, "replica_batch": 32}


def test_mirrored_gradient_equals_the_single_device_gradient(checks):
    gradients = checks["gradients"]
    cases = [case for case in gradients if not case.endswith("(update)")]
    assert {"kpartial+pseudo+pruned", "splc+pseudo+pruned", "ignore", "hill", "epr"} <= set(cases)
    assert not {"p_asl", "ll_r", "ll_ct"} & set(cases)  # they rank within a replica's share
    for case in cases:
        update = gradients[f"{case} (update)"]
        assert update > 1e-3, case  # the step changed the weights
        # Normalising each replica by its own count of known labels is off by ~1e-3 of the
        # update here; summing the counts over replicas first is exact to rounding.
        assert gradients[case] <= 1e-5 * update, (case, gradients[case], update)


def test_every_replica_holds_the_same_state_after_refreshes_and_pruning(checks):
    state = checks["replica_state"]
    assert state["differing"] == []
    assert state["checks"] == 6  # each of the 5 epochs' starts, and the end
    replicas = state["replicas"]
    for name in (
        "pseudo_positives",
        "pseudo_thresholds",
        "pseudo_negative_thresholds",
        "active_classes",
        "splc_epoch",
        "active_kernel",
    ):
        assert replicas[name] == 2, name  # mirrored, not a single copy


def test_a_mirrored_run_resumes_to_the_same_result(checks):
    resume = checks["resume"]
    assert resume["resumed_after_epoch"] == 2
    assert resume["resumed"] == resume["whole"]


def test_what_cannot_be_distributed_is_refused_in_one_line(checks):
    refusals = checks["refusals"]
    assert "ll_cp writes per-example corrections" in refusals["ll_cp"]
    assert "--strategy=one_device" in refusals["ll_cp"]
    assert refusals["odd_batch"].startswith("--batch_size=65 (the global batch) is not a multiple")
    assert all("\n" not in message for message in refusals.values())


# ----------------------------------------------------------------------------
# Sharding: in-process, no second device needed.


def _epoch_ids(dataset):
    return [batch["id"].numpy() for batch in dataset]


def _shards(source, global_size, parts):
    size = global_size // parts
    seed = tf.constant([7, 3], tf.int64)
    return [
        _epoch_ids(
            source.training_batches(
                seed, size // 2, shard=input_sources.BatchShard(global_size, part * size, size)
            )
        )
        for part in range(parts)
    ]


def _reassembled(shards):
    """The global batches the parts' per-replica batches make, in step order."""
    steps = len(shards[0]) // 2
    return [
        np.concatenate([shard[2 * step + r] for shard in shards for r in (0, 1)])
        for step in range(steps)
    ]


def test_shards_of_feature_batches_are_the_single_device_batches():
    features = np.arange(103 * 2, dtype=np.float32).reshape(103, 2)
    source = input_sources.FeatureSource(features)
    single = _epoch_ids(source.training_batches(tf.constant([7, 3], tf.int64), 20))
    shards = _shards(source, 20, 2)
    assert [len(s) for s in shards] == [10, 10]  # 5 steps x 2 local replicas each
    np.testing.assert_array_equal(np.stack(_reassembled(shards)), np.stack(single))
    seen = np.concatenate(single)
    assert len(set(seen)) == len(seen) == 100  # once each; only the 3-example remainder is left


def test_shards_of_image_batches_decode_only_their_share(tmp_path):
    paths = [str(write(tmp_path / f"{i}.jpg", JPEG)) for i in range(23)]
    source = input_sources.ImageFileSource(paths, (4, 4))
    single = source.training_batches(tf.constant([7, 3], tf.int64), 8)
    single_batches = list(single)
    shards = _shards(source, 8, 2)
    np.testing.assert_array_equal(
        np.stack(_reassembled(shards)), np.stack([b["id"].numpy() for b in single_batches])
    )
    # The same augmentation as in the single-device batch: crops are seeded by epoch position.
    seed = tf.constant([7, 3], tf.int64)
    shard = input_sources.BatchShard(8, 4, 4)
    first = next(iter(source.training_batches(seed, 2, shard=shard)))
    np.testing.assert_array_equal(first["x"].numpy(), single_batches[0]["x"].numpy()[4:6])


def test_shards_of_tfrecord_batches_are_the_single_device_batches(tmp_path):
    from kpartial import tfrecords
    from tests.test_tfrecords import LABELS, NAMES, write_jpegs

    paths = write_jpegs(tmp_path / "images", 7)
    images = data.MultiLabelData(LABELS, NAMES, image_paths=paths, source="coco:/x/i.json")
    tfrecords.write_tfrecords(images, str(tmp_path / "rec"), num_shards=2)
    source = input_sources.RecordSource(str(tmp_path / "rec"), (8, 8))
    seed = tf.constant([7, 3], tf.int64)
    single = list(source.training_batches(seed, 2))  # 3 steps; one example left over
    shards = [  # two workers of one replica, one example each per global batch of 2
        _epoch_ids(source.training_batches(seed, 1, shard=input_sources.BatchShard(2, p, 1)))
        for p in (0, 1)
    ]
    reassembled = [np.concatenate([shards[0][i], shards[1][i]]) for i in range(3)]
    np.testing.assert_array_equal(np.stack(reassembled), np.stack([b["id"] for b in single]))
    part = list(source.evaluation_batches(4, input_sources.WorkerPart(1, 2)))
    assert np.concatenate([b["id"].numpy() for b in part]).tolist() == [1, 3, 5]


def test_worker_parts_cover_every_example_once():
    features = np.zeros((11, 2), np.float32)
    source = input_sources.FeatureSource(features)
    parts = [
        np.concatenate(_epoch_ids(source.evaluation_batches(4, input_sources.WorkerPart(i, 3))))
        for i in range(3)
    ]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    assert parts[1].tolist() == [1, 4, 7, 10]


def test_a_sharded_training_dataset_keeps_labels_with_their_ids():
    train = data.load_spec("synthetic:train")
    shard = input_sources.BatchShard(64, 32, 32)
    inputs, labels = next(iter(pipeline.training_dataset(train, train.labels, 16, 1, shard=shard)))
    np.testing.assert_array_equal(labels.numpy(), train.labels[inputs["id"].numpy()])
    np.testing.assert_array_equal(inputs["x"].numpy(), train.features[inputs["id"].numpy()])


# ----------------------------------------------------------------------------
# One process, one worker.


def test_one_worker_is_the_chief_and_sums_nothing():
    assert distribution.place() == distribution.Place(0, 1)
    assert distribution.place().is_chief
    array = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(distribution.sum_across_workers(array), array)


def test_replica_loss_outside_a_strategy_is_the_loss():
    from kpartial import class_stats, losses

    labels = np.array([[1, 0, -1], [0, 0, 1]], np.int8)
    logits = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0]], np.float32)
    stats = class_stats.ClassStatistics.from_labels(labels, ["a", "b", "c"])
    for name in ("kpartial", "epr", "ignore"):
        loss = losses.get(name, stats)
        value, replicas = distribution.replica_loss(loss, loss.sums(labels, logits), 2)
        assert replicas == 1
        assert float(value) == pytest.approx(float(loss(labels, logits)), rel=1e-6), name


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "--strategy=multi_worker needs TF_CONFIG"),
        ("{not json", "TF_CONFIG is not a cluster"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "KeyError"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "index 1"),
        ('{"cluster": {"worker": ["a:abc"]}, "task": {"type": "worker", "index": 0}}', "port"),
        ('{"cluster": {"worker": "a:1,b:2"}, "task": {"type": "worker", "index": 0}}', "a list"),
        (
            (
                '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}, '
                '"rpc_layer": "carrier-pigeon"}'
            ),
            "rpc_layer must be grpc",
        ),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
)
def test_a_bad_tf_config_is_one_line(text, match):
    with pytest.raises(ValueError, match=match) as info:
        distribution.check_tf_config(text)
    assert "\n" not in str(info.value)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy must be one of auto, one_device"):
        Config.from_flat(strategy="parameter_server")
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribution.make_strategy("tpu")


def test_one_device_strategy_trains_like_the_default(tiny_npz):
    train, test = tiny_npz
    config = {"train_data": train, "test_data": test, "method": "ignore", "epochs": 2, "seed": 2}
    default = training.run(Config.from_flat(**config), log=lambda line: None)
    one = training.run(Config.from_flat(strategy="one_device", **config), log=lambda l: None)
    assert one["map"] == pytest.approx(default["map"], abs=1e-6)
