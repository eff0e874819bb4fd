"""Which exporters, where, with which secrets: ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_BSP_*`` parsing (unreadable values fall
back to the defaults with one warning), endpoint userinfo turned into a header, and secrets redacted from the
OpenTelemetry exporters' log records.
"""

from __future__ import annotations

import base64
import importlib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from opentelemetry import metrics
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
)
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.util.re import parse_env_headers

from otel_ml import config
from otel_ml._core.forksafe import gate_grpc

_log = logging.getLogger("otel_ml")

_BSP_DEFAULTS = {
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,
}
_DEFAULT_METRIC_INTERVAL_MS = 60000.0
_DEFAULT_OTLP_TIMEOUT_S = 10.0


def _protocol(signal: str, explicit: str | None) -> str:
    value = (
        explicit
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    value = value.strip().lower()
    if value not in ("grpc", "http/protobuf"):
        config.warn_once("otel_ml: unsupported OTLP protocol %r, using grpc", value)
        return "grpc"
    return value


def _exporter_choice(signal: str) -> str:
    value = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() or "otlp"
    if value not in ("otlp", "console", "none"):
        config.warn_once("otel_ml: unsupported OTEL_%s_EXPORTER=%r, using otlp", signal, value)
        return "otlp"
    return value


def _positive_number(name: str, default: float) -> float:
    """A positive number from ``name``; anything else is the default, with one warning (fails closed)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        config.warn_once("otel_ml: ignoring %s=%r (expected a positive number); using %s", name, raw, default)
        return default
    return value


def bsp_settings() -> dict[str, int]:
    """The BatchSpanProcessor's settings, parsed by otel-ml (the SDK raises or logs a traceback on bad values)."""
    s = {name: int(_positive_number(name, default)) for name, default in _BSP_DEFAULTS.items()}
    if s["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > s["OTEL_BSP_MAX_QUEUE_SIZE"]:
        _log.warning(
            "otel_ml: OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%s exceeds OTEL_BSP_MAX_QUEUE_SIZE=%s; using %s",
            s["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
            s["OTEL_BSP_MAX_QUEUE_SIZE"],
            s["OTEL_BSP_MAX_QUEUE_SIZE"],
        )
        s["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = s["OTEL_BSP_MAX_QUEUE_SIZE"]
    return s


def _otlp_timeout(signal: str) -> float | None:
    """``None`` when the exporters may read their timeout variables themselves; the default when one is bad
    (the gRPC exporter would otherwise raise ``ValueError`` out of ``configure``)."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = os.environ.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            config.warn_once("otel_ml: ignoring %s=%r (expected a positive number); using %s", name, raw, 10)
            return _DEFAULT_OTLP_TIMEOUT_S
    return None


def metric_interval(explicit: float | None) -> float:
    if explicit is not None:
        return explicit
    return _positive_number("OTEL_METRIC_EXPORT_INTERVAL", _DEFAULT_METRIC_INTERVAL_MS)


@dataclass
class _Target:
    """Where one signal goes: a URL without userinfo, and the headers (userinfo became Basic auth)."""

    endpoint: str | None
    headers: dict[str, str] | None


_secrets: set[str] = set()


def _remember_secret(value: str) -> None:
    value = value.strip()
    if len(value) >= 4:  # shorter values would redact ordinary words
        _secrets.add(value)
        _install_redaction()


def _signal_url(base: str, signal: str) -> str:
    """``<base>/v1/<signal>`` with the signal path added to the URL's path, so a query string stays a query
    (the SDK appends it to the end of the whole string, which turns ``?key=v`` into ``?key=v/v1/traces``)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + f"/v1/{signal.lower()}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _check_url(url: str, source: str) -> None:
    """Fail fast, naming where the URL came from (not the URL: it may carry userinfo), when it cannot be parsed."""
    try:
        urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"otel_ml: {source} is not a valid URL ({exc})") from None


def _target(signal: str, protocol: str, endpoint: str | None, headers: Mapping[str, str] | None) -> _Target:
    """Resolve the endpoint and headers the exporters would use, and move secrets out of the URL."""
    if endpoint is None:
        endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        if endpoint is not None:
            _check_url(endpoint, f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is not None:
            base = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
            _check_url(base, "OTEL_EXPORTER_OTLP_ENDPOINT")
            endpoint = _signal_url(base, signal) if protocol == "http/protobuf" else base
    else:
        _check_url(endpoint, "endpoint=")
        if protocol == "http/protobuf":
            endpoint = _signal_url(endpoint, signal)
    merged: dict[str, str] | None = dict(headers) if headers else None
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        raw = os.environ.get(name)
        if raw:
            for value in parse_env_headers(raw, liberal=True).values():
                _remember_secret(value)
    for value in (headers or {}).values():
        _remember_secret(str(value))
    if endpoint is None:
        return _Target(None, merged)
    parts = urlsplit(endpoint)
    for _, value in parse_qsl(parts.query, keep_blank_values=False):
        _remember_secret(value)
    if parts.username is None and parts.password is None:
        return _Target(endpoint, merged)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    for secret in (user, password, parts.netloc.rpartition("@")[0]):
        _remember_secret(secret)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if merged is None:
        merged = {}
        for name in (f"OTEL_EXPORTER_OTLP_{signal}_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
            if os.environ.get(name):  # explicit headers replace the variables: keep what they said
                merged.update(parse_env_headers(os.environ[name], liberal=True))
                break
    if not any(k.lower() == "authorization" for k in merged):
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        merged["authorization"] = f"Basic {token}"
        _remember_secret(token)
    return _Target(clean, merged)


class _RedactSecrets(logging.Filter):
    """Replaces OTLP header values, endpoint userinfo and query values in a log record by ``<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(_secrets)
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if any(s in message or (record.exc_text and s in record.exc_text) for s in secrets):
            for s in secrets:
                message = message.replace(s, "<redacted>")
                if record.exc_text:
                    record.exc_text = record.exc_text.replace(s, "<redacted>")
            record.msg, record.args = message, None
        return True


# Loggers that may print an endpoint (with its query) or an exception carrying one. A filter on a logger only
# sees records created on that very logger, hence the explicit list.
_REDACTED_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "urllib3.connectionpool",
    "otel_ml",
)
_redaction = _RedactSecrets()


def _install_redaction() -> None:
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _redaction not in logger.filters:
            logger.addFilter(_redaction)


def _http_session(signal: str) -> Any:
    """A requests session for the OTLP/HTTP exporter when a CA certificate is configured, else ``None``.

    The exporter sets ``session.verify`` to ``OTEL_EXPORTER_OTLP_CERTIFICATE``, but requests lets
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` from the environment override a session's ``verify``
    (psf/requests#3829): the configured CA would be silently ignored and every export would fail verification.
    This session keeps the exporter's own setting.
    """
    configured = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE") or os.environ.get(
        "OTEL_EXPORTER_OTLP_CERTIFICATE"
    )
    provider = os.environ.get(f"OTEL_PYTHON_EXPORTER_OTLP_HTTP_{signal}_CREDENTIAL_PROVIDER")
    if not configured or provider:
        return None
    import requests

    class _VerifyPinnedSession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings = super().merge_environment_settings(*args, **kwargs)
            settings["verify"] = self.verify
            return settings

    return _VerifyPinnedSession()


def _check_insecure(signal: str) -> None:
    """The gRPC exporters read ``OTEL_EXPORTER_OTLP_[<signal>_]INSECURE`` as "true" or else false, silently: an
    ``http://`` endpoint with ``INSECURE=1`` gets TLS and every export fails. Say so, once (the spec asks for it)."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"):
        raw = os.environ.get(name)
        if raw is not None and raw.strip().lower() not in ("true", "false"):
            config.warn_once("otel_ml: %s=%r is not true/false; the OTLP exporter reads it as false (TLS)", name, raw)


# Per signal: the console exporter, then the OTLP exporter's module for http/protobuf and for gRPC (imported on
# first use: an application that never exports over one of them never imports it) and its class name.
_EXPORTERS: dict[str, tuple[type, str, str, str]] = {
    "TRACES": (
        ConsoleSpanExporter,
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "OTLPSpanExporter",
    ),
    "METRICS": (
        ConsoleMetricExporter,
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
    ),
}


def _build(
    signal: str,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    meter_provider: metrics.MeterProvider | None,
) -> Any:
    """The exporter ``OTEL_{signal}_EXPORTER`` asks for (None for ``none``), configured from the OTLP variables."""
    choice = _exporter_choice(signal)
    if choice == "none":
        return None
    console, http_module, grpc_module, class_name = _EXPORTERS[signal]
    if choice == "console":
        return console()
    proto = _protocol(signal, protocol)
    target = _target(signal, proto, endpoint, headers)
    timeout = _otlp_timeout(signal)
    if proto == "http/protobuf":
        http_exporter = getattr(importlib.import_module(http_module), class_name)
        return http_exporter(
            endpoint=target.endpoint,
            headers=target.headers,
            timeout=timeout,
            session=_http_session(signal),
            meter_provider=meter_provider,
        )
    grpc_exporter = getattr(importlib.import_module(grpc_module), class_name)
    _check_insecure(signal)
    return gate_grpc(
        grpc_exporter(endpoint=target.endpoint, headers=target.headers, timeout=timeout, meter_provider=meter_provider)
    )


def build_span_exporter(
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    meter_provider: metrics.MeterProvider | None = None,
) -> SpanExporter | None:
    """The span exporter of ``OTEL_TRACES_EXPORTER`` (otlp by default), or None."""
    exporter: SpanExporter | None = _build("TRACES", endpoint, protocol, headers, meter_provider)
    return exporter


def build_metric_exporter(
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    meter_provider: metrics.MeterProvider | None = None,
) -> MetricExporter | None:
    """The metric exporter of ``OTEL_METRICS_EXPORTER`` (otlp by default), or None."""
    exporter: MetricExporter | None = _build("METRICS", endpoint, protocol, headers, meter_provider)
    return exporter
