"""Callback validation, derived ordering, and enforcement of declared writes."""

from __future__ import annotations

import pytest
import torch

from loopkit import Callback, CallbackError, Learner, OrderingError, UndeclaredWriteError
from loopkit.loop.ordering import order_callbacks


def names(callbacks):
    return [type(cb).__name__ for cb in callbacks]


def build(regression, callbacks):
    model, data, opt, loss = regression
    return Learner(model, data, opt, loss, callbacks=callbacks)


# ----------------------------------------------------------------------------------------------- validation
def test_a_misnamed_event_method_is_rejected_with_a_suggestion(regression):
    class Typo(Callback):
        def after_los(self, learner): ...

    with pytest.raises(CallbackError, match=r"Typo has method 'after_los'.*did you mean 'after_loss'"):
        build(regression, [Typo()])


def test_a_class_instead_of_an_instance_is_rejected(regression):
    class Fine(Callback):
        def after_loss(self, learner): ...

    with pytest.raises(CallbackError, match=r"instances, got the class Fine; pass Fine\(\)"):
        build(regression, [Fine])


@pytest.mark.parametrize("thing", [print, lambda learner: None, 3, "callback"])
def test_non_callbacks_are_rejected(regression, thing):
    with pytest.raises(CallbackError, match=r"not a callback|function"):
        build(regression, [thing])


def test_bad_declarations_are_rejected(regression):
    class StrWrites:
        writes = "loss"  # a string, not a tuple: would silently mean ('l', 'o', 's', 's')

        def after_loss(self, learner): ...

    with pytest.raises(CallbackError, match=r"writes='loss'"):
        build(regression, [StrWrites()])


def test_duplicate_callback_names_are_rejected(regression):
    class Twice(Callback):
        def after_loss(self, learner): ...

    with pytest.raises(ValueError, match="two callbacks are named 'Twice'"):
        build(regression, [Twice(), Twice()])


# ----------------------------------------------------------------------------------------------- ordering
def _cb(name, reads=(), writes=(), run_after=(), run_before=()):
    return type(
        name,
        (Callback,),
        {
            "reads": reads,
            "writes": writes,
            "run_after": run_after,
            "run_before": run_before,
            "after_loss": lambda self, learner: None,
        },
    )()


def test_writers_run_before_readers_whatever_the_list_order():
    reader, writer = _cb("Reader", reads=("loss",)), _cb("Writer", writes=("loss",))
    assert names(order_callbacks([reader, writer])) == ["Writer", "Reader"]
    assert names(order_callbacks([writer, reader])) == ["Writer", "Reader"]


def test_dotted_paths_relate_to_their_prefix_only():
    lr = _cb("SetsLR", writes=("optimizer.lr",))
    mom = _cb("SetsMomentum", writes=("optimizer.momentum",))
    logger = _cb("Logger", reads=("optimizer",))
    # lr and momentum do not clash; both are written before the logger reads the optimizer.
    assert names(order_callbacks([logger, lr, mom])) == ["SetsLR", "SetsMomentum", "Logger"]


def test_unrelated_callbacks_keep_list_order():
    a, b, c = _cb("A", reads=("x",)), _cb("B"), _cb("C", reads=("y",))
    assert names(order_callbacks([c, a, b])) == ["C", "A", "B"]


def test_write_write_clash_names_both_the_state_and_the_way_out():
    a, b = _cb("ClipA", writes=("loss",)), _cb("ClipB", writes=("loss",))
    with pytest.raises(OrderingError) as err:
        order_callbacks([a, b])
    msg = str(err.value)
    assert "ClipA and ClipB both write 'loss'" in msg
    assert "run_after=(ClipA,) on ClipB" in msg


def test_explicit_order_resolves_a_clash():
    a = _cb("ClipA", writes=("loss",))
    b = _cb("ClipB", writes=("loss",), run_before=("ClipA",))
    assert names(order_callbacks([a, b])) == ["ClipB", "ClipA"]


def test_run_after_by_class_and_missing_names_are_ignored():
    a = _cb("A")
    b = _cb("B", run_after=(type(a), "NotPresent"))
    assert names(order_callbacks([b, a])) == ["A", "B"]


def test_star_runs_after_or_before_everything_else():
    last = _cb("Saver", run_after=("*",))
    first = _cb("Setup", run_before=("*",))
    reader, writer = _cb("Reader", reads=("loss",)), _cb("Writer", writes=("loss",))
    assert names(order_callbacks([last, reader, first, writer])) == ["Setup", "Writer", "Reader", "Saver"]
    two_last = [_cb("SaverA", run_after=("*",)), _cb("SaverB", run_after=("*",)), _cb("Other")]
    assert names(order_callbacks(two_last)) == ["Other", "SaverA", "SaverB"]  # no cycle between the two
    after_saver = _cb("AfterSaver", run_after=("Saver",))
    assert names(order_callbacks([after_saver, last, reader])) == ["Reader", "Saver", "AfterSaver"]


def test_a_cycle_is_reported_with_every_edge():
    a = _cb("A", writes=("x",), reads=("y",))
    b = _cb("B", writes=("y",), reads=("x",))
    with pytest.raises(OrderingError) as err:
        order_callbacks([a, b])
    msg = str(err.value)
    assert "cycle" in msg and "A writes 'x', which B reads" in msg and "B writes 'y', which A reads" in msg


def test_a_cycle_through_explicit_declarations_is_found_behind_a_downstream_node():
    a = _cb("A", run_after=("C",))
    b = _cb("B", run_after=("A",))
    c = _cb("C", run_after=("B",))
    d = _cb("D", run_after=("C",))  # downstream of the cycle: walking forward from it would get stuck
    with pytest.raises(OrderingError, match=r"cycle: (A|B|C) -> .* -> \1"):
        order_callbacks([d, a, b, c])


def test_describe_lists_callbacks_per_event_in_run_order(regression):
    class Writer(Callback):
        writes = ("loss",)

        def after_loss(self, learner): ...

    class Reader(Callback):
        reads = ("loss",)

        def after_loss(self, learner): ...

        def after_fit(self, learner): ...

    learner = build(regression, [Reader(), Writer()])
    assert learner.describe() == "after_loss: Writer -> Reader\nafter_fit: Reader"


# ----------------------------------------------------------------------------------------------- guarded writes
def test_an_undeclared_write_names_the_callback_and_attribute(regression):
    class Sneaky(Callback):
        def after_loss(self, learner):
            learner.loss = learner.loss * 2

    learner = build(regression, [Sneaky()])
    with pytest.raises(UndeclaredWriteError, match=r"Sneaky set learner.loss.*add 'loss' to Sneaky.writes"):
        learner.fit(1)


def test_a_declared_write_takes_effect_on_the_learner(regression):
    model, data, opt, loss = regression
    seen = []

    class Scale(Callback):
        writes = ("loss",)

        def after_loss(self, learner):
            learner.loss = learner.loss * 0.0

    class Probe(Callback):
        reads = ("loss",)

        def after_loss(self, learner):
            seen.append(learner.loss.item())

    before = [p.clone() for p in model.parameters()]
    Learner(model, data, opt, loss, callbacks=[Probe(), Scale()]).fit(1)
    assert seen == [0.0] * len(data)
    # A zero loss has zero gradients, so plain SGD leaves the weights untouched.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_dotted_declaration_does_not_permit_rebinding(regression):
    class Rebinds(Callback):
        writes = ("optimizer.lr",)

        def before_fit(self, learner):
            learner.optimizer = None

    with pytest.raises(UndeclaredWriteError, match=r"learner.optimizer"):
        build(regression, [Rebinds()]).fit(1)


def test_the_guarded_view_reads_live_state_and_methods(regression):
    seen = []

    class Probe(Callback):
        def after_step(self, learner):
            seen.append((learner.global_step, learner.describe()))

    build(regression, [Probe()]).fit(1)
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert seen[0][1] == "after_step: Probe"
