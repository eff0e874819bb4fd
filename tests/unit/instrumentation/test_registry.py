"""The measured-call flags and the class wrapper every instrumentor patches with."""

from __future__ import annotations

from typing import Any

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
