"""tf.distribute inside a trainer: mirrored training on two logical CPUs equals single-device training.

TensorFlow fixes its devices once per process, so the multi-device runs happen in a fresh subprocess
(this file run as a script) that splits the CPU into two logical devices before anything else touches
TensorFlow; it writes its results to a folder that the tests below read.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _script_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def _run_script(mode, out, timeout=240):
    proc = subprocess.run([sys.executable, __file__, mode, str(out)], env=_script_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{mode} subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return _load(out)


def _load(out, name="results"):
    with open(out / f"{name}.json") as f:
        results = json.load(f)
    path = out / f"{name}.npz"
    return results, (dict(np.load(path)) if path.exists() else {})


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Results of the two-logical-CPU subprocess (see ``_mirrored_scenarios``)."""
    return _run_script("mirrored", tmp_path_factory.mktemp("mirrored"))


def _assert_same_weights(arrays, a, b, rtol=1e-5, atol=1e-6):
    names = sorted(k for k in arrays if k.startswith(f"{a}/"))
    assert names, f"no weights saved under {a}/"
    for name in names:
        np.testing.assert_allclose(arrays[name], arrays[name.replace(f"{a}/", f"{b}/", 1)], rtol=rtol, atol=atol, err_msg=name)


def test_mirrored_runs_on_two_replicas(mirrored):
    results, _ = mirrored
    assert results["replicas"] == 2
    assert results["devices"] == ["/device:CPU:0", "/device:CPU:1"]


def test_mirrored_supervised_training_equals_single_device(mirrored):
    """3 SGD(momentum) steps, global batch 4 (2 per replica), L2 regulariser: same weights, same loss terms."""
    results, arrays = mirrored
    _assert_same_weights(arrays, "sup_mirrored", "sup_default")
    assert results["sup_steps"] == [3, 3]
    for m, d in zip(results["sup_terms_mirrored"], results["sup_terms_default"]):
        assert set(m) == set(d) == {"supervised", "regularization", "total"}
        for k in d:
            assert m[k] == pytest.approx(d[k], rel=1e-5)
    # The weights moved: the comparison is not between two untouched initialisations.
    assert not np.allclose(arrays["sup_mirrored/0"], arrays["initial/0"])


def test_mirrored_uneven_split_still_averages_over_the_global_batch(mirrored):
    """An explicit batch of 5 is cut 2 + 3 over the replicas; the step equals the single-device step."""
    _, arrays = mirrored
    _assert_same_weights(arrays, "uneven_mirrored", "uneven_default")


def test_mirrored_relation_with_peer_equals_single_device(mirrored):
    """Supervised + relation term with stop_gradient peer predictions, cut together with the mediator batch."""
    results, arrays = mirrored
    _assert_same_weights(arrays, "rel_mirrored", "rel_default")
    for m, d in zip(results["rel_terms_mirrored"], results["rel_terms_default"]):
        assert set(m) == {"supervised", "agree", "total"}
        for k in d:
            assert m[k] == pytest.approx(d[k], rel=1e-5)
    # The peer's own network was not touched.
    _assert_same_weights(arrays, "peer_after", "peer_before", rtol=0, atol=0)


def test_checkpoint_written_under_mirrored_restores_on_default(mirrored):
    results, arrays = mirrored
    assert results["ckpt_step"] == 2
    _assert_same_weights(arrays, "ckpt_restored", "ckpt_saved", rtol=0, atol=0)


def test_export_under_mirrored_serves_the_trained_network(mirrored):
    results, _ = mirrored
    assert results["export_max_diff"] < 1e-5


def test_non_finite_loss_under_mirrored_applies_nothing(mirrored):
    results, _ = mirrored
    assert "non-finite loss" in results["nan_error"]
    assert results["nan_weights_unchanged"] and results["nan_step"] == 1


def test_global_batch_must_divide_over_replicas(mirrored):
    results, _ = mirrored
    assert "batch_size=3 is the global batch under a strategy with 2 replicas" in results["batch_error"]


def test_logical_cpus_after_initialisation(mirrored):
    results, _ = mirrored
    assert results["again_same_count"] == 2
    assert "already initialised its 2 CPU device(s)" in results["again_other_count_error"]


def test_tpu_without_a_tpu_is_a_clear_error(mirrored):
    results, _ = mirrored
    assert results["tpu_error"].startswith("No TPU could be reached for the 'tpu' strategy")


def test_collective_of_mirrored_trainers_equals_single_device(mirrored):
    """Two mirrored trainers stepping in turn (one shared strategy) in a Collective with an 'alternate' schedule."""
    _, arrays = mirrored
    _assert_same_weights(arrays, "coll_mirrored", "coll_default")
    _assert_same_weights(arrays, "coll_mirrored_b", "coll_default_b")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_multi_worker_two_processes_equal_single_device(tmp_path):
    """Two workers from TF_CONFIG, each reading its shard of the data with half the global batch of 4."""
    try:
        ports = _free_ports(2)
    except OSError as e:
        pytest.skip(f"cannot bind local ports: {e}")
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "worker", str(tmp_path)],
            env=_script_env({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=150)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-4000:] for log in logs)
    w0, arrays = _load(tmp_path, "worker0")
    w1, _ = _load(tmp_path, "worker1")
    assert (w0["shard"], w1["shard"]) == ([2, 0], [2, 1]) and w0["replicas"] == 2
    assert w0["terms"] == w1["terms"]  # both report the global loss
    for m, d in zip(w0["terms"], w0["terms_default"]):
        assert m == pytest.approx(d, rel=1e-5)
    _assert_same_weights(arrays, "multi_worker", "default")


# --- in-process checks (nothing here needs more than TensorFlow's default device setup) -----------------
def test_unknown_strategy_name_is_a_clear_error():
    from taskology_tf.core.distribute import make_strategy

    with pytest.raises(ValueError, match=r"Unknown strategy name='mirorred'; use one of \['default', 'mirrored'"):
        make_strategy("mirorred")
    with pytest.raises(ValueError, match="only applies to the 'mirrored' strategy"):
        make_strategy("default", devices=["/cpu:0"])


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "reads the cluster from the TF_CONFIG environment variable, which is not set"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "needs a 'cluster' with a 'worker'"),
        ('{"cluster": {"worker": ["localhost:1"]}}', "needs 'task'"),
        ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}', "index 1 is out of range"),
        ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "'ps' is not a job"),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    from taskology_tf.core.distribute import make_strategy

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        make_strategy("multi_worker")


def test_tpu_without_a_name_is_a_clear_error(monkeypatch):
    from taskology_tf.core.distribute import make_strategy

    monkeypatch.delenv("TPU_NAME", raising=False)
    if os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
        pytest.skip("this machine may have a TPU")
    with pytest.raises(RuntimeError, match="No TPU could be reached"):
        make_strategy("tpu")


def test_default_strategy_keeps_the_plain_loop(toy):
    import tensorflow as tf

    from taskology_tf.core.distribute import is_default, make_strategy
    from taskology_tf.core.trainer import TaskTrainer

    assert make_strategy("default") is tf.distribute.get_strategy()
    assert is_default(make_strategy("default"))
    for strategy in (None, "default"):
        trainer = TaskTrainer(toy.task_a, [], dedicated=toy.dataset(8, 1), batch_size=3, strategy=strategy)
        assert not trainer.distributed and trainer.strategy is tf.distribute.get_strategy()
    with pytest.raises(TypeError, match="strategy must be a name"):
        TaskTrainer(toy.task_a, [], strategy=2)


# --- the subprocess -------------------------------------------------------------------------------------
def _mirrored_scenarios(out):
    from taskology_tf.core.distribute import local_devices, make_strategy, use_logical_cpus

    devices = use_logical_cpus(2)  # first thing: before anything initialises TensorFlow's devices

    import keras
    import tensorflow as tf

    from conftest import ToyTask, dataset, make_examples, make_relation
    from taskology_tf.core.peer import InProcessPeer
    from taskology_tf.core.trainer import NonFiniteLossError, TaskTrainer

    results, arrays = {"devices": devices}, {}

    def save(prefix, model):
        for i, w in enumerate(model.get_weights()):
            arrays[f"{prefix}/{i}"] = w

    class RegularisedToyTask(ToyTask):
        def build_model(self):
            image = keras.Input((None, None, 3), dtype="uint8", name="image")
            x = keras.layers.Rescaling(1 / 255.0)(image)
            x = keras.layers.Conv2D(4, 1, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(1))(x)
            out = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.GlorotUniform(2),
                                      kernel_regularizer=keras.regularizers.L2(0.05))(x)
            return keras.Model({"image": image}, {"depth": out}, name=self.name)

    mirrored = make_strategy("mirrored")
    results["replicas"] = mirrored.num_replicas_in_sync
    assert local_devices() == [d for d in devices]

    # Supervised + regularisation, an optimizer made outside the strategy's scope (as gin makes it).
    task = RegularisedToyTask("a", "depth", 1, seed=1)
    ded = dataset(16, 1)
    trainers = {
        kind: TaskTrainer(task, [], dedicated=ded, batch_size=4, shuffle_buffer=0, strategy=strategy,
                          optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        for kind, strategy in (("mirrored", mirrored), ("default", None))
    }
    assert trainers["mirrored"].model.losses, "the regulariser should contribute a loss"
    save("initial", trainers["default"].model)
    trainers["mirrored"].model.set_weights(trainers["default"].model.get_weights())
    for kind, trainer in trainers.items():
        results[f"sup_terms_{kind}"] = [trainer.train_step() for _ in range(3)]
        save(f"sup_{kind}", trainer.model)
    results["sup_steps"] = [t.step for t in trainers.values()]
    odd = {k: tf.constant(v) for k, v in make_examples(5, 7).items()}
    for kind, trainer in trainers.items():
        trainer.train_step(dedicated_batch=odd)
        save(f"uneven_{kind}", trainer.model)

    # A relation with a peer: stop_gradient peer predictions computed on the host batch, cut with it.
    task_a = ToyTask("a", "depth", 1, seed=1)
    task_b = ToyTask("b", "normals", 3, seed=3)
    peer_model = task_b.build_model()
    save("peer_before", peer_model)
    mediator = dataset(12, 5, keys=("id", "image"))
    for kind, strategy in (("mirrored", "mirrored"), ("default", None)):
        peer = InProcessPeer(task_b, peer_model, live_step=lambda: 0)
        trainer = TaskTrainer(task_a, [make_relation(0.5)], peers={"b": peer}, dedicated=ded, mediator=mediator,
                              batch_size=4, shuffle_buffer=0, strategy=strategy)
        results[f"rel_terms_{kind}"] = [trainer.train_step() for _ in range(3)]
        save(f"rel_{kind}", trainer.model)
    save("peer_after", peer_model)

    # A Collective of two mirrored trainers (make_strategy shares one strategy between them).
    from taskology_tf.core.collective import Collective

    for kind, strategy in (("mirrored", "mirrored"), ("default", None)):
        rel = make_relation()
        ta = TaskTrainer(task_a, [rel], dedicated=ded, batch_size=4, shuffle_buffer=0, strategy=strategy, schedule="alternate")
        tb = TaskTrainer(task_b, [rel], batch_size=4, shuffle_buffer=0, strategy=strategy)
        coll = Collective([ta, tb], mediator=mediator, mediator_batch_size=4, shuffle_buffer=0)
        for _ in range(3):
            coll.round()
        save(f"coll_{kind}", ta.model)
        save(f"coll_{kind}_b", tb.model)

    # Checkpoints written under mirrored restore into a default-strategy trainer; export.
    workdir = os.path.join(out, "work")
    trainer = TaskTrainer(task_a, [], workdir=workdir, dedicated=ded, batch_size=4, strategy="mirrored")
    trainer.train(2)
    save("ckpt_saved", trainer.model)
    version = trainer.export()
    x = make_examples(3, 9)["image"]
    served = tf.saved_model.load(version).signatures["serving_default"](image=tf.constant(x))["depth"].numpy()
    results["export_max_diff"] = float(np.max(np.abs(served - trainer.predict({"image": x})["depth"].numpy())))
    restored = TaskTrainer(task_a, [], workdir=workdir, dedicated=ded, batch_size=4)
    results["ckpt_step"] = restored.step
    save("ckpt_restored", restored.model)

    # NaN: nothing applied.
    trainer = TaskTrainer(task_a, [], dedicated=ded, batch_size=4, strategy="mirrored")
    trainer.train_step()
    before = trainer.model.get_weights()
    bad = make_examples(4, 1)
    bad["depth"][3, 0, 0, 0] = np.nan  # on the second replica
    try:
        trainer.train_step(dedicated_batch={k: tf.constant(v) for k, v in bad.items()})
        results["nan_error"] = ""
    except NonFiniteLossError as e:
        results["nan_error"] = str(e)
    results["nan_weights_unchanged"] = all(np.array_equal(a, b) for a, b in zip(before, trainer.model.get_weights()))
    results["nan_step"] = trainer.step

    try:
        TaskTrainer(task_a, [], dedicated=ded, batch_size=3, strategy="mirrored")
        results["batch_error"] = ""
    except ValueError as e:
        results["batch_error"] = str(e)

    results["again_same_count"] = len(use_logical_cpus(2))
    try:
        use_logical_cpus(3)
        results["again_other_count_error"] = ""
    except RuntimeError as e:
        results["again_other_count_error"] = str(e)

    try:
        make_strategy("tpu", tpu="local")
        results["tpu_error"] = ""
    except RuntimeError as e:
        results["tpu_error"] = str(e)
    return results, arrays


def _worker(out):
    from taskology_tf.core.distribute import input_shard, make_strategy

    strategy = make_strategy("multi_worker")  # first thing, as TensorFlow requires

    from conftest import ToyTask, dataset
    from taskology_tf.core.trainer import TaskTrainer

    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    task = ToyTask("a", "depth", 1, seed=1)
    trainer = TaskTrainer(task, [], dedicated=dataset(16, 1), batch_size=4, shuffle_buffer=0, strategy=strategy)
    results = {"shard": list(input_shard(strategy)), "replicas": strategy.num_replicas_in_sync,
               "terms": [trainer.train_step()["total"] for _ in range(3)]}
    arrays = {f"multi_worker/{i}": w for i, w in enumerate(trainer.model.get_weights())}
    if index == 0:
        reference = TaskTrainer(task, [], dedicated=dataset(16, 1), batch_size=4, shuffle_buffer=0)
        results["terms_default"] = [reference.train_step()["total"] for _ in range(3)]
        arrays.update({f"default/{i}": w for i, w in enumerate(reference.model.get_weights())})
    return results, arrays, f"worker{index}"


if __name__ == "__main__":
    mode, out = sys.argv[1], pathlib.Path(sys.argv[2])
    if mode == "worker":
        results, arrays, name = _worker(out)
    else:
        (results, arrays), name = _mirrored_scenarios(out), "results"
    np.savez(out / f"{name}.npz", **arrays)
    with open(out / f"{name}.json", "w") as f:
        json.dump(results, f)
