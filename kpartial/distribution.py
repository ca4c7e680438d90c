"""tf.distribute for kpartial: the strategy of a run, which worker it is, and sums across workers.

kpartial trains with TensorFlow's own distribution engine. A run's strategy is one of

- `one_device`: `tf.distribute.OneDeviceStrategy` on the first GPU (or the CPU);
- `mirrored`: `tf.distribute.MirroredStrategy`, one replica per local GPU (without a GPU, one per
  logical CPU device: the CPU, unless the program split it into several);
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`, one process per machine, each
  reading its place in the cluster from `TF_CONFIG`;
- `auto`: `mirrored` when several GPUs are visible, else TensorFlow's default strategy (one
  device, no tf.distribute machinery at all).

Every process of a cluster runs the same program with the same flags: each builds the model, the
optimizer and kpartial's state variables under the strategy's scope (so they are mirrored, and
created with the chief's initial values), trains on its share of each global batch, and takes
part in every collective: the gradient all-reduce of each step, and the sums of a pseudo-label
refresh's or a pruning event's statistics (`sum_across_workers`), after which every worker holds
the same thresholds, stored pseudo labels and active classes. Only the chief (worker 0, or the
task of type "chief") writes into the workdir.
"""

import hashlib
import json
import os
import socket
import time
from typing import NamedTuple

import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def _gpus():
    return tf.config.list_physical_devices("GPU")


_created = {}


class PeerTimeoutError(TimeoutError):
    """The other workers of a multi-worker cluster did not all start in time."""


def make_strategy(name, peer_timeout=600.0):
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`), one per process.

    A multi-worker strategy must exist before the process runs any other TensorFlow op, so a
    program creates it first; asking again for the same name returns the same object.

    Args:
      name: one of `STRATEGIES`.
      peer_timeout: seconds `multi_worker` waits for every worker of `TF_CONFIG` to start.

    Raises:
      ValueError: an unknown name, or `multi_worker` without a usable `TF_CONFIG`.
      PeerTimeoutError: not every worker started within `peer_timeout` seconds. The process
        should then exit: TensorFlow's wait for them cannot be cancelled.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name not in _created:
        _created[name] = _new_strategy(name, peer_timeout)
    return _created[name]


def _new_strategy(name, peer_timeout):
    if name == "auto":
        return (
            tf.distribute.MirroredStrategy() if len(_gpus()) > 1 else tf.distribute.get_strategy()
        )
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if _gpus() else "/cpu:0")
    if name == "mirrored":
        if _gpus():
            return tf.distribute.MirroredStrategy()
        # CPUs only: one replica per logical CPU device (several only when a program configured
        # them, as the tests do to check data parallelism without GPUs).
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    check_tf_config(os.environ.get("TF_CONFIG", ""))
    return _join_cluster(peer_timeout)


def _join_cluster(peer_timeout):
    """`MultiWorkerMirroredStrategy()` once every worker of `TF_CONFIG` is up.

    TensorFlow's constructor waits in native code, without a deadline, for every worker to
    answer, and signals do not reach that wait (TensorFlow also takes over SIGTERM there). So the
    workers first meet in Python: each listens on its own cluster port and connects to every
    other worker's, until all answer or `peer_timeout` seconds pass. A worker that has already
    moved on to TensorFlow's server answers on the same port. Ctrl-C and SIGTERM end this wait.
    """
    config = json.loads(os.environ["TF_CONFIG"])
    task = config["task"]
    own = config["cluster"][task["type"]][int(task["index"])]
    peers = [
        address for members in config["cluster"].values() for address in members if address != own
    ]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            listener.bind(("", int(own.rpartition(":")[2])))
        except OSError as e:
            raise OSError(
                e.errno, f"TF_CONFIG: this worker's address {own}: {e.strerror}"
            ) from None
        listener.listen(len(peers) + 1)  # the kernel completes the peers' connections
        waiting = _unreachable(peers, time.monotonic() + peer_timeout)
    finally:
        listener.close()
    if waiting:
        raise PeerTimeoutError(
            f"--peer_timeout: {len(waiting)} of the other {len(peers)} workers of TF_CONFIG did "
            f"not start within {peer_timeout:g} s ({', '.join(waiting):.200}); start the same "
            "command on each of them"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def _unreachable(addresses, deadline):
    """The `addresses` ("host:port") that accepted no connection before `deadline`."""
    waiting = list(addresses)
    while waiting and time.monotonic() < deadline:
        for address in list(waiting):
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
                waiting.remove(address)
            except OSError:
                pass
        if waiting:
            time.sleep(0.2)
    return waiting


def check_tf_config(text):
    """Raises a one-line `ValueError` unless `text` is a TF_CONFIG this process can join with."""
    if not text:
        raise ValueError(
            "--strategy=multi_worker needs TF_CONFIG: set it in each worker's environment to "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
        )
    shown = text if len(text) <= 200 else text[:200] + "..."
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else repr(e)
        raise ValueError(
            f"TF_CONFIG is not a cluster with this task in it ({reason}): {shown}"
        ) from None
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(
                f'TF_CONFIG: cluster["{kind}"] must be a list of "host:port" strings, got '
                f"{addresses!r:.80}"
            )
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not (isinstance(address, str) and host and port.isdigit() and int(port) < 65536):
                raise ValueError(
                    f'TF_CONFIG: cluster["{kind}"] has {address!r:.80}, not a "host:port" with a '
                    "port number"
                )
    if config.get("rpc_layer", "grpc") != "grpc":
        raise ValueError(f"TF_CONFIG: rpc_layer must be grpc, got {config['rpc_layer']!r:.80}")
    if not 0 <= index < len(members):
        raise ValueError(f"TF_CONFIG: task index {index} is not among the {len(members)} tasks")


class Place(NamedTuple):
    """Where this process is: worker `index` of `count`; worker 0 is the chief."""

    index: int
    count: int

    @property
    def is_chief(self):
        return self.index == 0


def place(strategy=None):
    """This process's `Place` in `strategy` (the current one by default)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return Place(0, 1)
    cluster = resolver.cluster_spec().as_dict()
    chiefs = len(cluster.get("chief", ()))
    count = chiefs + len(cluster.get("worker", ()))
    if resolver.task_type == "chief":
        return Place(0, count)
    return Place(chiefs + int(resolver.task_id), count)


class Placement(NamedTuple):
    """A run's strategy and this process's place in it: made once per run, passed down."""

    strategy: object
    place: Place

    @property
    def is_chief(self):
        return self.place.is_chief

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync


def placement(name, peer_timeout=600.0):
    """The `Placement` of the strategy called `name` (see `make_strategy`)."""
    strategy = make_strategy(name, peer_timeout)
    return Placement(strategy, place(strategy))


def local_replicas(strategy):
    """Replicas of `strategy` in this process."""
    return len(strategy.extended.worker_devices)


def sum_across_workers(array, strategy=None):
    """The sum over every worker of each worker's `array` (same shape and dtype everywhere).

    A collective: every worker must call it at the same point. Without several workers it returns
    `array` as it is.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if place(strategy).count == 1:
        return np.asarray(array)
    value = tf.constant(array)
    first = local_replicas(strategy)

    def per_replica(context):
        # The worker's value on its first local replica, zeros on the others: the sum over all
        # replicas is then the sum over workers.
        if context.replica_id_in_sync_group % first == 0:
            return tf.identity(value)
        return tf.zeros_like(value)

    values = strategy.experimental_distribute_values_from_function(per_replica)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()


def state_digest(model):
    """A short hash of every variable of `model` and its optimizer, as this process holds them:
    workers that print the same digest hold the same weights, optimizer slots and kpartial state."""
    digest = hashlib.sha256()
    optimizer_variables = model.optimizer.variables if model.optimizer is not None else []
    for variable in [*model.weights, *optimizer_variables]:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()[:16]


def replica_loss(loss, sums, batch_size):
    """(this replica's share of the global batch's loss, replicas) from `loss.sums(...)`.

    In a replica of a strategy with R > 1 replicas, the counted entries (and a loss's batch
    statistics) are summed over all replicas first, so the shares add up to the loss of the
    global batch, and the optimizer's sum of the replicas' gradients is the gradient a single
    device computes on that batch (its normalisers are the global counts, not each replica's;
    the all-reduce passes gradients back to every replica). Elsewhere it is the loss itself.
    `batch_size` is the replica's batch.
    """
    numerators, counts, statistics = sums
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    if replicas > 1:
        counts = context.all_reduce(tf.distribute.ReduceOp.SUM, counts)
        if statistics is not None:
            statistics = context.all_reduce(tf.distribute.ReduceOp.SUM, statistics)
    value = loss.normalised(numerators, counts, None, batch_size)  # the parts, global counts
    if statistics is not None:  # a term of the global batch: each replica adds 1/R of it
        means = statistics / tf.cast(batch_size * replicas, statistics.dtype)
        value = value + loss.batch_term(means) / replicas
    return value, replicas
