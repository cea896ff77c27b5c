import pytest

from taskology_tf.core.schedule import Schedule


def test_parse():
    assert Schedule.parse("both") == Schedule(1, 1, True)
    assert Schedule.parse("alternate") == Schedule(1, 1, False)
    assert Schedule.parse("ratio:3:1") == Schedule(3, 1, False)


@pytest.mark.parametrize("bad", ["sometimes", "ratio:3", "ratio:a:1", "ratio:0:0"])
def test_parse_errors(bad):
    with pytest.raises(ValueError):
        Schedule.parse(bad)


def test_ratio_cycle():
    s = Schedule.parse("ratio:3:1")
    assert [s.draws(i, True, True) for i in range(5)] == [(True, False)] * 3 + [(False, True), (True, False)]


def test_single_kind_of_data_uses_it_every_step():
    s = Schedule.parse("ratio:3:1")
    assert all(s.draws(i, False, True) == (False, True) for i in range(4))
    assert all(s.draws(i, True, False) == (True, False) for i in range(4))
