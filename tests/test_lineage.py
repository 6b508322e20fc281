"""A PBT trial's lineage: its text, its segments and donors, the schedule assembled across the trials that trained
its weights."""
import pytest

from tune_cvae.experiment.lineage import LineageError, assemble, donors, lineage, segments


def test_lineage_text_names_who_trained_each_epoch():
    history = [{"epoch": 1, "trained_by": "a"}, {"epoch": 2, "trained_by": "a"}, {"epoch": 3, "trained_by": "b"}]
    assert lineage(history) == "a:1-2 b:3-3"
    assert segments("a:1-2 b:3-3") == [("a", 1, 2), ("b", 3, 3)] and donors("a:1-2 b:3-3") == [(2, "a")]
    rows = {"a": {e: {"epoch": e, "beta": 0.1, "lineage": f"a:1-{e}"} for e in (1, 2, 3)},
            "b": {3: {"epoch": 3, "beta": 0.2, "lineage": "a:1-2 b:3-3"}}}
    got = assemble("b", 3, lambda who: rows.get(who, {}))
    assert [(r["epoch"], r["beta"]) for r in got] == [(1, 0.1), (2, 0.1), (3, 0.2)]
    with pytest.raises(LineageError, match="trial a: the records of its epochs 1-2"):
        assemble("b", 3, lambda who: rows["b"] if who == "b" else {})
