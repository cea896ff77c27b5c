"""Predict latency and bytes on the wire: a model served by `taskology serve` (separate process, gRPC
on loopback) versus calling the same SavedModel in process; and the latency cost of a version swap.

    .venv/bin/python benchmarks/serving_latency.py --requests 200 --batch 4

The served model is the normals task's network (tiny preset) on 64x128 mediator images, i.e. what a
trainer's peer asks for every step. Bytes are the serialized PredictRequest / PredictResponse sizes
per mediator example (uint8 image in; float32 normals out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def percentiles(values_s):
    import numpy as np

    ms = 1000.0 * np.asarray(values_s)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--preset", default="tiny")
    args = p.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from taskology_tf.serving.client import PredictClient
    from taskology_tf.serving.codec import to_tensor_proto
    from taskology_tf.serving.export import export_model
    from taskology_tf.tasks.normals import NormalsTask

    keras.utils.set_random_seed(0)
    model = NormalsTask(preset=args.preset).build_model()
    base = os.path.join(tempfile.mkdtemp(prefix="taskology_latency_"), "normals")
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.height, args.width, 3), dtype=np.uint8)
    export_model(model, base, 1, warmup_inputs={"image": images})

    # In process: the same SavedModel's serving signature.
    fn = tf.saved_model.load(os.path.join(base, "1")).signatures["serving_default"]
    fn(image=tf.constant(images))
    local = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        out = fn(image=tf.constant(images))
        out["normals"].numpy()
        local.append(time.perf_counter() - t0)

    # Served: a separate server process, gRPC on loopback.
    server = subprocess.Popen(
        [sys.executable, "-m", "taskology_tf.serving.server", "--model_name", "normals", "--model_base_path", base,
         "--port", "0", "--file_system_poll_wait_seconds", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = None
        while port is None:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError("the server exited before printing its port")
            if line.startswith("port="):
                port = int(line.strip().split("=")[1])
        client = PredictClient(f"127.0.0.1:{port}", "normals", timeout=30.0)
        client.wait_until_available(60.0)
        outputs, _ = client.predict({"image": images})
        served = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            client.predict({"image": images})
            served.append(time.perf_counter() - t0)

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "normals"
        request.inputs["image"].CopyFrom(to_tensor_proto(images))
        response = predict_pb2.PredictResponse()
        response.outputs["normals"].CopyFrom(to_tensor_proto(outputs["normals"].astype(np.float32)))
        response_f16 = predict_pb2.PredictResponse()
        response_f16.outputs["normals"].CopyFrom(to_tensor_proto(outputs["normals"].astype(np.float16)))

        # Version swap: keep requesting while a new version is exported and swapped in.
        swap_latencies, failures, stop = [], [], threading.Event()

        def hammer():
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    _, version = client.predict({"image": images})
                except Exception as e:  # counted and reported: a swap must not fail requests
                    failures.append(repr(e))
                    continue
                swap_latencies.append((time.perf_counter() - t0, version))

        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(0.5)
        export_model(model, base, 2, warmup_inputs={"image": images})
        deadline = time.time() + 30
        while time.time() < deadline and not any(v == 2 for _, v in swap_latencies):
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        thread.join()
        client.close()
    finally:
        server.terminate()
        server.wait(10)

    n = args.batch
    l50, l99 = percentiles(local)
    s50, s99 = percentiles(served)
    w50, w99 = percentiles([t for t, _ in swap_latencies])
    print(f"normals/{args.preset}, batch {n} of {args.height}x{args.width}, {args.requests} requests each")
    print(f"{'path':<34}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'in-process SavedModel':<34}{l50:>9.2f}{l99:>9.2f}")
    print(f"{'served (gRPC, loopback)':<34}{s50:>9.2f}{s99:>9.2f}")
    print(f"{'served, during a version swap':<34}{w50:>9.2f}{w99:>9.2f}   ({len(swap_latencies)} requests, "
          f"max {1000 * max(t for t, _ in swap_latencies):.1f} ms, {len(failures)} failed)")
    print(f"bytes per mediator example: request {request.ByteSize() / n:,.0f}, response {response.ByteSize() / n:,.0f} "
          f"(float16 outputs: {response_f16.ByteSize() / n:,.0f})")


if __name__ == "__main__":
    main()
