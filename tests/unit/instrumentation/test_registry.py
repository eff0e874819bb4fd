"""The measured-call flags and the class wrapper every instrumentor patches with."""

from __future__ import annotations

import functools
import gc
import inspect
from typing import Any

import pytest

from otel_ml.instrumentation import registry


class _Model:
    def predict(self, x: int) -> int:
        return x + 1


def test_inside_a_measured_call_a_class_wrapper_binds_the_original() -> None:
    original = _Model.__dict__["predict"]
    seen: list[Any] = []

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seen.append(instance)
        return wrapped(*args, **kwargs)

    _Model.predict = registry.ClassWrapper(original, wrapper)  # type: ignore[method-assign]
    try:
        model = _Model()
        assert model.predict(1) == 2 and seen == [model]
        taken = model.predict  # a bound wrapper taken outside any measured call
        tokens = registry.enter(object())
        try:
            inner = model.predict
            assert inner.__func__ is original and inner.__self__ is model  # the plain bound method
            assert inner(1) == 2 and taken(1) == 2  # wrapt's enabled= skips the wrapper of the earlier one
        finally:
            registry.leave(tokens)
        assert seen == [model]
        tokens = registry.enter(object(), nested_wrappers=True)  # e.g. Pipeline step spans: wrappers run
        try:
            assert model.predict(2) == 3
        finally:
            registry.leave(tokens)
        assert seen == [model, model]
        assert model.predict(3) == 4 and seen == [model, model, model]  # after the call: wrapped again
    finally:
        _Model.predict = original  # type: ignore[method-assign]


def test_a_wrapped_non_descriptor_is_returned_as_it_is() -> None:
    class Callable:
        def __call__(self, x: int) -> int:
            return x

    target = Callable()
    wrapped = registry.ClassWrapper(target, lambda w, i, a, k: w(*a, **k))
    tokens = registry.enter(object())
    try:
        assert wrapped.__get__(object(), object) is target
    finally:
        registry.leave(tokens)


def test_a_function_is_patched_with_a_function_that_skips_the_wrapper_when_nested() -> None:
    original = _Model.__dict__["predict"]
    seen: list[tuple[Any, tuple[Any, ...]]] = []

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seen.append((instance, args))
        return wrapped(*args, **kwargs) * 10

    patch = registry.class_patch(original, wrapper)
    assert inspect.isfunction(patch) and registry.is_patch(patch) and not registry.is_patch(original)
    assert patch.__wrapped__ is original and patch.__qualname__ == original.__qualname__
    assert inspect.signature(patch) == inspect.signature(original)
    _Model.predict = patch  # type: ignore[method-assign]
    try:
        model = _Model()
        assert model.predict(1) == 20 and seen == [(model, (1,))]
        assert _Model.predict(model, 2) == 30 and seen[-1] == (model, (2,))  # called on the class: same instance
        taken = model.predict  # a bound method taken outside any measured call
        tokens = registry.enter(object())
        try:
            assert model.predict(1) == 2 and taken(1) == 2  # the original alone, the wrapper skipped
        finally:
            registry.leave(tokens)
        assert len(seen) == 2
        tokens = registry.enter(object(), nested_wrappers=True)  # e.g. Pipeline step spans: wrappers run
        try:
            assert model.predict(3) == 40
        finally:
            registry.leave(tokens)
        assert len(seen) == 3
        with pytest.raises(TypeError):
            _Model.predict()  # the original's own error, not the wrapper's
    finally:
        _Model.predict = original  # type: ignore[method-assign]


def test_other_descriptors_are_patched_with_a_class_wrapper() -> None:
    prop = functools.partialmethod(_Model.predict, 5)  # a method-like descriptor that is not a function
    patch = registry.class_patch(prop, lambda w, i, a, k: w(*a, **k))
    assert isinstance(patch, registry.ClassWrapper) and registry.is_patch(patch)


def test_a_true_bypass_sends_the_call_to_the_original_before_anything_else() -> None:
    """torch passes ``torch.compiler.is_compiling`` (folded to True by dynamo while it traces)."""
    original = _Model.__dict__["predict"]
    seen: list[Any] = []
    compiling = [False]
    patch = registry.class_patch(original, lambda w, i, a, k: seen.append(i) or w(*a, **k), bypass=lambda: compiling[0])
    _Model.predict = patch  # type: ignore[method-assign]
    try:
        model = _Model()
        assert model.predict(1) == 2 and seen == [model]
        compiling[0] = True
        assert model.predict(1) == 2 and seen == [model]  # the wrapper skipped, outside any measured call too
    finally:
        _Model.predict = original  # type: ignore[method-assign]


_SHARED: list[int] = []


class _Every:
    """Every kind of parameter, defaults included (one of them a shared mutable object)."""

    def call(self, a, /, b, c=2, *rest, d, e=_SHARED, **extra):  # type: ignore[no-untyped-def]
        return (self, a, b, c, rest, d, e, extra)


_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1, 2), {"d": 4}),
    ((1,), {"b": 2, "d": 4}),
    ((1, 2, 3, 5, 6), {"d": 4, "e": [9], "z": 7}),
    ((1, 2, 3), {"d": 4, "zz": None}),
]


@pytest.mark.parametrize(("args", "kwargs"), _CALLS)
def test_the_patch_takes_the_originals_own_parameters_and_passes_the_same_call_on(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    original = _Every.__dict__["call"]
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def wrapper(wrapped: Any, instance: Any, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
        seen.append((a, k))
        return wrapped(*a, **k)

    patch = registry.class_patch(original, wrapper)
    # no *args/**kwargs repacking: the code takes exactly what the original's takes
    for attribute in ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount"):
        assert getattr(patch.__code__, attribute) == getattr(original.__code__, attribute)
    assert patch.__defaults__ == original.__defaults__ and patch.__kwdefaults__["e"] is _SHARED
    _Every.call = patch  # type: ignore[method-assign]
    try:
        model = _Every()
        expected = original(model, *args, **kwargs)
        assert model.call(*args, **kwargs) == expected  # through the wrapper
        positional, keywords = seen[-1]
        assert positional[:2] == (1, 2) and keywords["d"] == 4  # the positional parameters after self, by position
        assert keywords["e"] is expected[6]  # the default itself when not given
        tokens = registry.enter(object())
        try:
            assert model.call(*args, **kwargs) == expected  # nested: the original alone
            assert model.call(*args, **kwargs)[6] is expected[6]
        finally:
            registry.leave(tokens)
        assert len(seen) == 1
    finally:
        _Every.call = original  # type: ignore[method-assign]


def test_a_wrong_call_raises_the_originals_own_type_error_text_and_tracebacks_name_the_method() -> None:
    original = _Every.__dict__["call"]
    patch = registry.class_patch(original, lambda w, i, a, k: w(*a, **k))
    for bad in ((), (_Every(),), (_Every(), 1, 2)):  # no self; no a, b; no d
        with pytest.raises(TypeError) as theirs:
            original(*bad)
        with pytest.raises(TypeError) as ours:
            patch(*bad)
        assert str(ours.value) == str(theirs.value)

    def fails(self: Any, x: int) -> int:
        raise ValueError(x)

    with pytest.raises(ValueError) as raised:
        registry.class_patch(fails, lambda w, i, a, k: w(*a, **k))(object(), 1)  # through the patch's frame
    tb, frames = raised.tb, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    assert [c.co_name for c in frames if c.co_filename == "<otel-ml class patch>"] == ["fails"]


def test_the_parameters_come_from_the_code_and_a_clashing_name_gets_the_varargs_patch() -> None:
    def declared(self: Any, x: int) -> int:
        return x

    declared.__signature__ = inspect.signature(lambda self, y: None)  # type: ignore[attr-defined]
    patch = registry.class_patch(declared, lambda w, i, a, k: w(*a, **k) * 2)
    assert patch.__code__.co_varnames[:2] == ("self", "x") and patch(object(), x=3) == 6  # what a call binds
    assert inspect.signature(patch) == inspect.signature(declared)  # the declared one, as the original's

    def clashing(self: Any, _otel_ml_on: int) -> int:
        return _otel_ml_on

    patch = registry.class_patch(clashing, lambda w, i, a, k: w(*a, **k) * 2)
    assert patch.__code__.co_flags & inspect.CO_VARARGS and patch.__code__.co_flags & inspect.CO_VARKEYWORDS
    assert patch(object(), 3) == 6


def test_cached_gives_a_models_state_once_built_and_only_for_that_very_model() -> None:
    """The per-call lookup: nothing before the state is built, the same object after, nothing for another model
    that happens to get the same id once the first is gone, and nothing after ``forget_states``."""

    class Model:
        pass

    model = Model()
    assert registry.cached(model, "test") is None
    built = registry.state(model, "test", dict)
    assert registry.cached(model, "test") is built and registry.cached(model, "other") is None
    key = id(model)
    del model
    gc.collect()
    assert key not in registry._entries  # the entry went with its model
    again = Model()
    assert registry.cached(again, "test") is None
    state = registry.state(again, "test", list)
    registry.forget_states("test")
    assert registry.cached(again, "test") is None and state == []
