"""The measured-call flags and the class wrapper every instrumentor patches with."""

from __future__ import annotations

import functools
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
