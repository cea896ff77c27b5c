"""core/storage.py and the trainer on shared storage: a local path and TensorFlow's in-memory ram:// filesystem."""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core import storage, workdir as workdir_lib
from taskology_tf.core.trainer import TaskTrainer, write_json_atomic
from taskology_tf.serving.export import list_versions


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    """A fresh folder: a local path, or a ram:// URL (behaves like an object store: no atomic folder rename)."""
    return str(tmp_path / "root") if request.param == "local" else f"ram://storage-{uuid.uuid4().hex}"


def _read(path):
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _write(path, text):
    storage.makedirs(os.path.dirname(path) if not storage.is_url(path) else path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def test_write_text_atomic_replaces_the_whole_file(root):
    path = storage.join(root, "metrics.json")
    storage.makedirs(root)
    write_json_atomic(path, {"step": 1})
    write_json_atomic(path, {"step": 2})
    assert json.loads(_read(path)) == {"step": 2}
    assert storage.listdir(root) == ["metrics.json"]  # no temporary file left


@pytest.mark.parametrize("atomic_rename", [None, False])
def test_publish_tree_copies_every_file_with_the_marker_last(root, atomic_rename):
    source, target = storage.join(root, ".tmp-7"), storage.join(root, "7")
    for rel in ("variables/variables.index", "variables/variables.data-00000-of-00001", "saved_model.pb",
                "assets.extra/tf_serving_warmup_requests", "fingerprint.pb"):
        _write(storage.join(source, *rel.split("/")), rel)
    storage.makedirs(storage.join(source, "assets"))  # an empty folder (SavedModels have one)
    order = []
    storage.publish_tree(source, target, last=("saved_model.pb",), atomic_rename=atomic_rename, on_copy=order.append)
    if atomic_rename is False or storage.is_url(root):  # copied file by file
        assert order[-1] == "saved_model.pb" and len(order) == 5
    else:
        assert order == []  # a local path: one atomic rename
    folders, files = storage.tree(target)
    assert folders == ["assets", "assets.extra", "variables"]
    assert _read(storage.join(target, "variables", "variables.index")) == "variables/variables.index"
    assert len(files) == 5 and not storage.exists(source)


def test_a_url_workdir_is_created_and_not_locked():
    root = f"ram://workdir-{uuid.uuid4().hex}/run/depth"
    with workdir_lib.lock(root) as held:
        assert storage.isdir(root)
        workdir_lib.lock(root).release()  # no lock to contend for on an object store
    held.release()


def test_trainer_checkpoints_resumes_and_exports_on_a_local_path_and_ram(toy, root):
    workdir = storage.join(root, "a")

    def trainer():
        return TaskTrainer(toy.task_a, [], workdir=workdir, dedicated=toy.dataset(8, 1), batch_size=4,
                           checkpoint_every=2, export_every=2, export_keep=2)

    first = trainer()
    first.train(4)
    weights = first.model.get_weights()
    first.close()
    assert list_versions(storage.join(workdir, "export")) == [2, 4]
    assert tf.train.latest_checkpoint(storage.join(workdir, "ckpt")).endswith("ckpt-4")
    again = trainer()  # a new job on the same storage resumes where the first stopped
    assert again.step == 4
    for a, b in zip(weights, again.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    again.train(6)
    again.close()
    assert list_versions(storage.join(workdir, "export")) == [4, 6]
    loaded = tf.saved_model.load(storage.join(workdir, "export", "6"))
    x = toy.examples(2, 3)["image"]
    out = loaded.signatures["serving_default"](image=tf.constant(x))
    np.testing.assert_allclose(out["depth"].numpy(), again.predict({"image": x})["depth"].numpy(), rtol=1e-5, atol=1e-5)
