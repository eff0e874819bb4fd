"""OTEL_ML_* parsing: documented defaults, boolean spellings, and fail-closed fallbacks with one warning each."""

from __future__ import annotations

import logging

import pytest

from otel_ml import config

# variable -> (field, default)
BOOLS: dict[str, tuple[str, bool]] = {
    config.OTEL_ML_DISABLED: ("disabled", False),
    config.OTEL_ML_STRICT: ("strict", False),
    config.OTEL_ML_CAPTURE_EXCEPTION_MESSAGE: ("capture_exception_message", False),
    config.OTEL_ML_SKETCH_INPUTS: ("sketch_inputs", True),
    config.OTEL_ML_CAPTURE_CATEGORIES: ("capture_categories", False),
}
# variable -> (field, default, smallest accepted value, a valid non-default value as text, and parsed)
NUMBERS: dict[str, tuple[str, float, float, str, float]] = {
    config.OTEL_ML_MAX_CLASS_LABELS: ("max_class_labels", 50, 1, "7", 7),
    config.OTEL_ML_MAX_MODELS: ("max_models", 200, 1, "3", 3),
    config.OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH: ("attribute_value_max_length", 256, 16, "64", 64),
    config.OTEL_ML_QUEUE_SIZE: ("queue_size", 1024, 1, "16", 16),
    config.OTEL_ML_SHUTDOWN_TIMEOUT: ("shutdown_timeout", 5.0, 0.0, "2.5", 2.5),
    config.OTEL_ML_LOG_INTERVAL: ("log_interval", 60.0, 0.0, "0.25", 0.25),
    config.OTEL_ML_DRIFT_WINDOW: ("drift_window", 5000, 0, "100", 100),
    config.OTEL_ML_DRIFT_INTERVAL: ("drift_interval", 10.0, 0.0, "30", 30.0),
    config.OTEL_ML_WARMUP_ROWS: ("warmup_rows", 1000, 1, "50", 50),
    config.OTEL_ML_MAX_FEATURES: ("max_features", 100, 1, "20", 20),
    config.OTEL_ML_SKETCH_BUFFER_ROWS: ("sketch_buffer_rows", 16384, 1, "1", 1),
}
FLOATS = [config.OTEL_ML_SHUTDOWN_TIMEOUT, config.OTEL_ML_LOG_INTERVAL, config.OTEL_ML_DRIFT_INTERVAL]
INTEGERS = sorted(set(NUMBERS) - set(FLOATS))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otel_ml" and r.levelno == logging.WARNING]


@pytest.fixture
def warnings_only(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="otel_ml")
    return caplog


def test_documented_defaults(warnings_only: pytest.LogCaptureFixture) -> None:
    settings = config.load({})
    assert settings.disabled is False
    assert settings.strict is False
    assert settings.capture_exception_message is False
    assert settings.max_class_labels == 50
    assert settings.max_models == 200
    assert settings.attribute_value_max_length == 256
    assert settings.queue_size == 1024
    assert settings.shutdown_timeout == 5.0
    assert settings.log_interval == 60.0
    assert settings.sketch_inputs is True
    assert settings.drift_window == 5000
    assert settings.drift_interval == 10.0
    assert settings.warmup_rows == 1000
    assert settings.max_features == 100
    assert settings.capture_categories is False
    assert settings.sketch_buffer_rows == 16384
    assert _warnings(warnings_only) == []


def test_variable_names() -> None:
    assert (
        config.OTEL_ML_DISABLED,
        config.OTEL_ML_STRICT,
        config.OTEL_ML_CAPTURE_EXCEPTION_MESSAGE,
        config.OTEL_ML_MAX_CLASS_LABELS,
        config.OTEL_ML_MAX_MODELS,
        config.OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH,
        config.OTEL_ML_QUEUE_SIZE,
        config.OTEL_ML_SHUTDOWN_TIMEOUT,
        config.OTEL_ML_LOG_INTERVAL,
    ) == (
        "OTEL_ML_DISABLED",
        "OTEL_ML_STRICT",
        "OTEL_ML_CAPTURE_EXCEPTION_MESSAGE",
        "OTEL_ML_MAX_CLASS_LABELS",
        "OTEL_ML_MAX_MODELS",
        "OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH",
        "OTEL_ML_QUEUE_SIZE",
        "OTEL_ML_SHUTDOWN_TIMEOUT",
        "OTEL_ML_LOG_INTERVAL",
    )


@pytest.mark.parametrize("name", sorted(BOOLS))
@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "yes", "YES", "on", "On", " true ", "\tyes\n"])
def test_true_spellings(name: str, raw: str, warnings_only: pytest.LogCaptureFixture) -> None:
    assert getattr(config.load({name: raw}), BOOLS[name][0]) is True
    assert _warnings(warnings_only) == []


@pytest.mark.parametrize("name", sorted(BOOLS))
@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "False", "no", "NO", "off", "Off", "", "   ", " false "])
def test_false_spellings(name: str, raw: str, warnings_only: pytest.LogCaptureFixture) -> None:
    assert getattr(config.load({name: raw}), BOOLS[name][0]) is False
    assert _warnings(warnings_only) == []


@pytest.mark.parametrize("name", sorted(BOOLS))
@pytest.mark.parametrize("raw", ["maybe", "2", "-1", "enabled", "y", "t", "truee", "ja"])
def test_invalid_booleans_fall_back_with_one_warning(
    name: str, raw: str, warnings_only: pytest.LogCaptureFixture
) -> None:
    field, default = BOOLS[name]
    assert getattr(config.load({name: raw}), field) is default
    (record,) = _warnings(warnings_only)
    message = record.getMessage()
    assert name in message and repr(raw) in message and f"using {default}" in message


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_valid_numbers(name: str, warnings_only: pytest.LogCaptureFixture) -> None:
    field, _, low, raw, value = NUMBERS[name]
    assert getattr(config.load({name: raw}), field) == value
    assert getattr(config.load({name: f"  {raw}\n"}), field) == value
    lowest = str(int(low)) if name in INTEGERS else str(low)
    assert getattr(config.load({name: lowest}), field) == low  # the minimum itself is accepted
    assert _warnings(warnings_only) == []


@pytest.mark.parametrize("name", INTEGERS)
def test_integer_settings_are_ints(name: str) -> None:
    field = NUMBERS[name][0]
    value = getattr(config.load({name: NUMBERS[name][3]}), field)
    assert type(value) is int
    assert type(getattr(config.load({}), field)) is int


@pytest.mark.parametrize("name", FLOATS)
def test_float_settings_are_floats(name: str) -> None:
    field = NUMBERS[name][0]
    assert type(getattr(config.load({name: "3"}), field)) is float
    assert getattr(config.load({name: "3"}), field) == 3.0


@pytest.mark.parametrize("name", sorted(NUMBERS))
@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_numbers_mean_the_default_silently(name: str, raw: str, warnings_only: pytest.LogCaptureFixture) -> None:
    field, default, *_ = NUMBERS[name]
    assert getattr(config.load({name: raw}), field) == default
    assert _warnings(warnings_only) == []


@pytest.mark.parametrize("name", sorted(NUMBERS))
@pytest.mark.parametrize("raw", ["abc", "ten", "1,5", "--1", "0x10"])
def test_unparsable_numbers_fall_back_with_one_warning(
    name: str, raw: str, warnings_only: pytest.LogCaptureFixture
) -> None:
    field, default, *_ = NUMBERS[name]
    assert getattr(config.load({name: raw}), field) == default
    (record,) = _warnings(warnings_only)
    message = record.getMessage()
    assert name in message and repr(raw) in message and "not a number" in message


@pytest.mark.parametrize("name", INTEGERS)
@pytest.mark.parametrize("raw", ["1.5", "1e3", "12.0"])
def test_fractions_for_integer_settings_fall_back_with_one_warning(
    name: str, raw: str, warnings_only: pytest.LogCaptureFixture
) -> None:
    field, default, *_ = NUMBERS[name]
    assert getattr(config.load({name: raw}), field) == default
    assert len(_warnings(warnings_only)) == 1


BELOW_MINIMUM = {
    config.OTEL_ML_MAX_CLASS_LABELS: ["0", "-5"],
    config.OTEL_ML_MAX_MODELS: ["0", "-1"],
    config.OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH: ["15", "0", "-256"],
    config.OTEL_ML_QUEUE_SIZE: ["0", "-1024"],
    config.OTEL_ML_SHUTDOWN_TIMEOUT: ["-0.001", "-5"],
    config.OTEL_ML_LOG_INTERVAL: ["-1", "-1e-9"],
    config.OTEL_ML_DRIFT_WINDOW: ["-1"],
    config.OTEL_ML_DRIFT_INTERVAL: ["-0.5"],
    config.OTEL_ML_WARMUP_ROWS: ["0"],
    config.OTEL_ML_MAX_FEATURES: ["0", "-3"],
    config.OTEL_ML_SKETCH_BUFFER_ROWS: ["0"],
}


@pytest.mark.parametrize(("name", "raw"), [(name, raw) for name, raws in sorted(BELOW_MINIMUM.items()) for raw in raws])
def test_numbers_below_the_minimum_fall_back_with_one_warning(
    name: str, raw: str, warnings_only: pytest.LogCaptureFixture
) -> None:
    field, default, low, *_ = NUMBERS[name]
    assert getattr(config.load({name: raw}), field) == default
    (record,) = _warnings(warnings_only)
    message = record.getMessage()
    assert name in message and repr(raw) in message and f"below {low}" in message


@pytest.mark.parametrize("name", FLOATS)
def test_nan_falls_back_with_one_warning(name: str, warnings_only: pytest.LogCaptureFixture) -> None:
    field, default, *_ = NUMBERS[name]
    assert getattr(config.load({name: "nan"}), field) == default
    assert len(_warnings(warnings_only)) == 1


def test_one_warning_per_invalid_variable(warnings_only: pytest.LogCaptureFixture) -> None:
    settings = config.load(
        {
            config.OTEL_ML_DISABLED: "sometimes",
            config.OTEL_ML_QUEUE_SIZE: "0",
            config.OTEL_ML_LOG_INTERVAL: "soon",
            config.OTEL_ML_MAX_MODELS: "12",
        }
    )
    assert (settings.disabled, settings.queue_size, settings.log_interval, settings.max_models) == (
        False,
        1024,
        60.0,
        12,
    )
    messages = [r.getMessage() for r in _warnings(warnings_only)]
    assert len(messages) == 3
    assert sum(config.OTEL_ML_DISABLED in m for m in messages) == 1
    assert sum(config.OTEL_ML_QUEUE_SIZE in m for m in messages) == 1
    assert sum(config.OTEL_ML_LOG_INTERVAL in m for m in messages) == 1


def test_unrelated_variables_are_ignored(warnings_only: pytest.LogCaptureFixture) -> None:
    assert config.load({"OTEL_ML_UNKNOWN": "x", "OTEL_SERVICE_NAME": "svc", "PATH": "/bin"}) == config.load({})
    assert _warnings(warnings_only) == []


def test_reload_reads_os_environ(env: pytest.MonkeyPatch, warnings_only: pytest.LogCaptureFixture) -> None:
    env.setenv(config.OTEL_ML_DISABLED, "yes")
    env.setenv(config.OTEL_ML_MAX_CLASS_LABELS, "5")
    env.setenv(config.OTEL_ML_CAPTURE_EXCEPTION_MESSAGE, "nope")
    settings = config.reload()
    assert config.settings is settings
    assert settings.disabled is True
    assert settings.max_class_labels == 5
    assert settings.capture_exception_message is False
    assert len(_warnings(warnings_only)) == 1


def test_reload_from_a_mapping_replaces_the_settings() -> None:
    try:
        settings = config.reload({config.OTEL_ML_QUEUE_SIZE: "8"})
        assert config.settings is settings
        assert settings.queue_size == 8
        assert settings.strict is False  # the mapping, not os.environ (the suite sets OTEL_ML_STRICT=1)
    finally:
        config.reload()
    assert config.settings.strict is True
    assert config.settings.queue_size == 1024


def test_settings_are_immutable() -> None:
    settings = config.load({})
    with pytest.raises(AttributeError):
        settings.strict = True  # type: ignore[misc]


@pytest.mark.parametrize(
    "name,value,attribute,default",
    [
        (config.OTEL_ML_SHUTDOWN_TIMEOUT, "1e300", "shutdown_timeout", 5.0),
        (config.OTEL_ML_SHUTDOWN_TIMEOUT, "inf", "shutdown_timeout", 5.0),
        (config.OTEL_ML_SKETCH_BUFFER_ROWS, "1e12", "sketch_buffer_rows", 16384),
        (config.OTEL_ML_SKETCH_BUFFER_ROWS, "65537", "sketch_buffer_rows", 16384),
    ],
)
def test_values_above_the_maximum_fall_back(
    name: str, value: str, attribute: str, default: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown timeout the threading module cannot wait for, a buffer that cannot be allocated: the default."""
    assert getattr(config.load({name: value}), attribute) == default
    assert sum(name in r.getMessage() for r in caplog.records) == 1


def test_warn_once_says_a_message_once(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        config.warn_once("otel_ml: %s is not a number", "OTEL_TEST_WARN_ONCE")
    config.warn_once("otel_ml: %s is not a number", "OTEL_TEST_WARN_ONCE_OTHER")
    said = [r.getMessage() for r in caplog.records if "OTEL_TEST_WARN_ONCE" in r.getMessage()]
    assert said == [
        "otel_ml: OTEL_TEST_WARN_ONCE is not a number",
        "otel_ml: OTEL_TEST_WARN_ONCE_OTHER is not a number",
    ]
