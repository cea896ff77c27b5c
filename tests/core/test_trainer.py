"""TaskTrainer: Sec. 3.1 special cases, schedules, checkpoints, resume and errors."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.collective import Collective
from taskology_tf.core.trainer import NonFiniteLossError, TaskTrainer, throughput_record, write_json_atomic
from taskology_tf.data.example import ExampleSpecError


def _collective(toy, ded_a, ded_b, schedule="both", workdir=None):
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], workdir=workdir and f"{workdir}/a", dedicated=ded_a, batch_size=4, shuffle_buffer=0, schedule=schedule)
    tb = TaskTrainer(toy.task_b, [rel], workdir=workdir and f"{workdir}/b", dedicated=ded_b, batch_size=4, shuffle_buffer=0, schedule=schedule)
    return Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4, shuffle_buffer=0)


def test_empty_dedicated_data_is_unsupervised(toy):
    """Both dedicated datasets empty: each task learns from the relation only (pure consistency)."""
    coll = _collective(toy, None, None)
    losses = [coll.round() for _ in range(25)]
    assert set(losses[0]["a"]) == {"agree", "total"}
    assert losses[-1]["a"]["agree"] < 0.5 * losses[0]["a"]["agree"]


def test_overlapping_dedicated_data(toy):
    """One dataset labelled for both tasks feeds both supervised losses."""
    shared = toy.dataset(16, 1)
    coll = _collective(toy, shared, shared)
    first = coll.round()
    for _ in range(30):
        last = coll.round()
    for name in ("a", "b"):
        assert {"supervised", "agree", "total"} <= set(first[name])
        assert last[name]["supervised"] < first[name]["supervised"]


def test_partially_labelled_examples_contribute_no_supervised_loss(toy):
    """Masked labels (zeros) give a zero supervised loss; the relation still applies to them."""
    unlabelled = toy.dataset(8, 2, unlabelled=("depth", "normals"))
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], dedicated=unlabelled, batch_size=4, shuffle_buffer=0)
    tb = TaskTrainer(toy.task_b, [rel], dedicated=toy.dataset(8, 3), batch_size=4, shuffle_buffer=0)
    coll = Collective([ta, tb], mediator=unlabelled, mediator_batch_size=4, shuffle_buffer=0)
    values = coll.round()
    assert values["a"]["supervised"] == 0.0
    assert values["a"]["agree"] > 0.0
    assert values["b"]["supervised"] > 0.0


def test_mixed_labelled_and_unlabelled_dataset(toy):
    labelled = toy.dataset(4, 1)
    unlabelled = toy.dataset(4, 2, unlabelled=("depth",))
    mixed = labelled.concatenate(unlabelled)
    trainer = TaskTrainer(toy.task_a, [], dedicated=mixed, batch_size=8, shuffle_buffer=0)
    batch = next(iter(mixed.batch(8)))
    per_example = toy.task_a.loss(batch, trainer.model({"image": batch["image"]})).numpy()
    assert np.all(per_example[:4] > 0) and np.all(per_example[4:] == 0)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("alternate", [{"supervised"}, {"agree"}, {"supervised"}, {"agree"}]),
        ("ratio:2:1", [{"supervised"}, {"supervised"}, {"agree"}, {"supervised"}]),
        ("both", [{"supervised", "agree"}] * 4),
    ],
)
def test_schedules(toy, schedule, expected):
    coll = _collective(toy, toy.dataset(8, 1), toy.dataset(8, 2), schedule=schedule)
    got = [set(coll.round()["a"]) - {"total"} for _ in range(4)]
    assert got == expected


def test_checkpoint_resume_continues_from_last_step(toy, tmp_path):
    coll = _collective(toy, toy.dataset(8, 1), toy.dataset(8, 2), workdir=str(tmp_path))
    coll.train(5, progress=False)
    weights = [t.model.get_weights() for t in coll.trainers.values()]
    coll.close()
    # A new process (fresh objects) with the same workdir resumes at step 5 with the same weights.
    again = _collective(toy, toy.dataset(8, 1), toy.dataset(8, 2), workdir=str(tmp_path))
    assert again.step == 5
    for w_old, t in zip(weights, again.trainers.values()):
        for a, b in zip(w_old, t.model.get_weights()):
            np.testing.assert_array_equal(a, b)
    again.train(7, progress=False)
    assert again.step == 7
    assert os.path.exists(tmp_path / "a" / "ckpt" / "checkpoint")


def test_checkpoint_of_another_network_is_a_clear_error(toy, tmp_path):
    trainer = TaskTrainer(toy.task_a, [], workdir=str(tmp_path), dedicated=toy.dataset(8, 1), batch_size=4)
    trainer.train(1)
    with pytest.raises(RuntimeError, match="does not match the task's network"):
        TaskTrainer(toy.task_b, [], workdir=str(tmp_path), dedicated=toy.dataset(8, 1), batch_size=4)


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(toy, tmp_path):
    trainer = TaskTrainer(toy.task_a, [], workdir=str(tmp_path), dedicated=toy.dataset(8, 1), batch_size=4, checkpoint_every=2)
    trainer.train(2)
    weights = trainer.model.get_weights()
    ex = toy.examples(4, 1)
    ex["depth"][0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"step 2: non-finite loss .*ckpt-2 is intact"):
        trainer.train_step(dedicated_batch={k: tf.constant(v) for k, v in ex.items()})
    for a, b in zip(weights, trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing applied
    assert trainer.step == 2
    assert TaskTrainer(toy.task_a, [], workdir=str(tmp_path), dedicated=toy.dataset(8, 1), batch_size=4).step == 2


def test_missing_label_key_is_a_clear_error(toy):
    with pytest.raises(ExampleSpecError, match=r"Task 'a' \(dedicated data\) needs example keys \['depth'\]"):
        TaskTrainer(toy.task_a, [], dedicated=toy.dataset(8, 1, keys=("id", "image", "normals")))


def test_wrong_dtype_is_a_clear_error(toy):
    bad = toy.dataset(8, 1).map(lambda e: {**e, "image": tf.cast(e["image"], tf.float32)})
    with pytest.raises(ExampleSpecError, match="key 'image' has dtype float32 but the example contract says uint8"):
        TaskTrainer(toy.task_a, [], dedicated=bad)


def test_not_a_dataset_is_a_clear_error(toy):
    with pytest.raises(TypeError, match="expected an unbatched tf.data.Dataset"):
        TaskTrainer(toy.task_a, [], dedicated=toy.examples(4))


def test_evaluate_writes_metrics(toy, tmp_path):
    trainer = TaskTrainer(toy.task_a, [], workdir=str(tmp_path), dedicated=toy.dataset(8, 1), eval_data=toy.dataset(8, 4), batch_size=4)
    result = trainer.train(3)
    assert math.isfinite(result["mse"])
    assert list((tmp_path / "logs" / "eval").iterdir())


def test_write_json_atomic(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomic(str(path), {"a": 1})
    write_json_atomic(str(path), {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_relation_warm_up(toy):
    """A relation with start_step 2 and ramp 2 is off, then at half weight, then at full weight."""
    import dataclasses

    rel = dataclasses.replace(toy.relation(weight=2.0), start_step=2, ramp_steps=2)
    assert [rel.scale_at(s) for s in range(5)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    ta = TaskTrainer(toy.task_a, [rel], dedicated=toy.dataset(8, 1), batch_size=4, shuffle_buffer=0)
    tb = TaskTrainer(toy.task_b, [rel], dedicated=toy.dataset(8, 2), batch_size=4, shuffle_buffer=0)
    coll = Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4, shuffle_buffer=0)
    terms = [coll.round()["a"] for _ in range(4)]
    assert ["agree" in t for t in terms] == [False, False, True, True]
    # total = supervised + weight * scale * agree
    assert terms[2]["total"] == pytest.approx(terms[2]["supervised"] + 1.0 * terms[2]["agree"], rel=1e-5)
    assert terms[3]["total"] == pytest.approx(terms[3]["supervised"] + 2.0 * terms[3]["agree"], rel=1e-5)


def test_mediator_inputs_give_the_own_network_another_view_of_the_mediator(toy):
    """With ``mediator_inputs`` the task's network answers the relation on another key; peers keep the original."""
    mediator = toy.dataset(8, 5, keys=("id", "image")).map(lambda e: dict(e, image_alt=255 - e["image"]))

    def first_round(mediator_inputs):
        rel = toy.relation()
        ta = TaskTrainer(toy.task_a, [rel], batch_size=4, shuffle_buffer=0, mediator_inputs=mediator_inputs)
        tb = TaskTrainer(toy.task_b, [rel], batch_size=4, shuffle_buffer=0)
        coll = Collective([ta, tb], mediator=mediator, mediator_batch_size=4, shuffle_buffer=0)
        return coll.round()

    plain, alt = first_round(None), first_round({"image": "image_alt"})
    assert alt["a"]["agree"] != pytest.approx(plain["a"]["agree"], rel=1e-3)  # a saw the other view
    assert alt["b"]["agree"] == pytest.approx(plain["b"]["agree"], rel=1e-6)  # b, and a as b's peer, saw the original
    with pytest.raises(ValueError, match="not inputs of task"):
        TaskTrainer(toy.task_a, [toy.relation()], mediator_inputs={"depth": "image_alt"})
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], mediator_inputs={"image": "image_missing"})
    tb = TaskTrainer(toy.task_b, [rel])
    with pytest.raises(Exception, match="image_missing"):
        Collective([ta, tb], mediator=mediator, mediator_batch_size=4)


def test_relation_rejects_negative_warm_up(toy):
    import dataclasses

    with pytest.raises(ValueError, match="start_step and ramp_steps"):
        dataclasses.replace(toy.relation(), start_step=-1)


def test_periodic_export_publishes_versions(toy, tmp_path):
    trainer = TaskTrainer(toy.task_a, [], workdir=str(tmp_path), dedicated=toy.dataset(8, 1), batch_size=4,
                          export_every=2, export_keep=2)
    trainer.train(6)
    base = tmp_path / "export"
    assert sorted(int(p.name) for p in base.iterdir()) == [4, 6]  # versions = steps; older ones pruned
    loaded = tf.saved_model.load(str(base / "6"))
    x = toy.examples(2, 3)["image"]
    out = loaded.signatures["serving_default"](image=tf.constant(x))
    np.testing.assert_allclose(out["depth"].numpy(), trainer.predict({"image": x})["depth"].numpy(), rtol=1e-5, atol=1e-5)


class _FlakyPeer:
    """A peer whose server is down for the calls listed in ``down``."""

    input_keys = ("image",)

    def __init__(self, live, down):
        self.live, self.down, self.calls = live, set(down), 0
        self.task_name = "b"

    def on_step(self, step):
        pass

    def staleness(self):
        return {}

    def predict(self, inputs):
        self.calls += 1
        if self.calls in self.down:
            raise ConnectionError("peer b at 127.0.0.1:1 is down")
        return self.live.predict(inputs)


def test_trainer_survives_a_peer_that_is_down(toy):
    rel = toy.relation()
    tb = TaskTrainer(toy.task_b, [], dedicated=toy.dataset(8, 2), batch_size=4)
    peer = _FlakyPeer(tb, down={2, 3})
    ta = TaskTrainer(toy.task_a, [rel], peers={"b": peer}, dedicated=toy.dataset(8, 1),
                     mediator=toy.dataset(8, 5, keys=("id", "image")), batch_size=4)
    terms = [set(ta.train_step()) for _ in range(4)]
    assert terms == [{"supervised", "agree", "total"}, {"supervised", "total"}, {"supervised", "total"},
                     {"supervised", "agree", "total"}]
    assert ta.peer_unavailable_steps == {"b": 2} and ta.step == 4


def test_throughput_record_leaves_the_first_step_out_of_the_rate():
    record = throughput_record((100.0, 1.0, 10), (104.0, 5.0, 11), (109.0, 12.5, 31))
    assert record == {"steps": 21, "first_step_seconds": 4.0, "timed_steps": 20, "seconds": 5.0, "cpu_seconds": 7.5,
                      "steps_per_second": 4.0, "cpu_cores": 1.5}
    assert throughput_record((0.0, 0.0, 3), None, (1.0, 1.0, 3)) == {"steps": 0}
    assert "steps_per_second" not in throughput_record((0.0, 0.0, 3), (1.0, 1.0, 4), (1.0, 1.0, 4))


def test_train_records_its_throughput(toy):
    trainer = TaskTrainer(toy.task_a, dedicated=toy.dataset(8, 1), batch_size=4, shuffle_buffer=0)
    assert trainer.throughput == {}
    trainer.train(4)
    assert trainer.throughput["steps"] == 4 and trainer.throughput["timed_steps"] == 3
    assert trainer.throughput["steps_per_second"] > 0 and trainer.throughput["cpu_seconds"] >= 0
