"""A cluster of worker processes on this machine, for the multi-worker tests and benchmarks.

Each worker runs the same command with its own `TF_CONFIG` (ports on 127.0.0.1), as
`tf.distribute.MultiWorkerMirroredStrategy` expects of the machines of a real cluster.
"""

import json
import os
import socket
import subprocess
import tempfile
import time


def local_tf_configs(num_workers, host="127.0.0.1"):
    """TF_CONFIG texts of a cluster of `num_workers` workers on this machine, on free ports."""
    ports = []
    sockets = [socket.socket() for _ in range(num_workers)]
    try:
        for sock in sockets:  # all held open at once, so the ports differ
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(num_workers)
    ]


def run_local_cluster(command, num_workers, timeout, env=None):
    """Runs `command` (argv) once per worker of a local cluster, each with its TF_CONFIG.

    Args:
      command: the argv every worker runs.
      num_workers: how many worker processes.
      timeout: seconds after which workers still running are killed.
      env: the workers' environment (default: this process's), to which TF_CONFIG is added.

    Returns:
      Each worker's (exit status, output) in worker order. A worker still running after
      `timeout` seconds, or after another one failed, is killed (its status is then negative):
      one worker alone would wait for the others forever.
    """
    outputs = [tempfile.TemporaryFile(mode="w+") for _ in range(num_workers)]  # noqa: SIM115
    processes = [
        subprocess.Popen(
            command,
            env={**(env or os.environ), "TF_CONFIG": tf_config},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tf_config, output in zip(local_tf_configs(num_workers), outputs)
    ]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in processes):
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, output in zip(processes, outputs):
        output.seek(0)
        results.append((p.returncode, output.read()))
        output.close()
    return results
