"""Optional OpenTelemetry tracing of a send, from the gateway through the sender, as one trace.

Off unless ``NOTI_TRACING_ENABLED``; then it needs the ``tracing`` extra (``pip install
'noti[tracing]'``: the OpenTelemetry SDK and its OTLP/HTTP exporter), and nothing of
OpenTelemetry is imported otherwise. The gateway's span context crosses the queue in the
stream message's optional ``trace`` field (W3C ``traceparent``/``tracestate``); a message
without one is traced from the sender on, and an older sender ignores the field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from noti.settings import GatewaySettings, SenderSettings

GATEWAY = "noti-gateway"
SENDER = "noti-sender"
EXTRA = "pip install 'noti[tracing]'"


class TracingUnavailable(RuntimeError):
    """Tracing is asked for but OpenTelemetry is not installed; the message says what to install."""


class Span:
    """One span being recorded: attributes may be added, its context handed on."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def carrier(self) -> dict[str, str]:
        """This span's context as W3C trace context headers, for the stream message."""
        from opentelemetry.trace import set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(self._span))
        return carrier

    def error(self, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, description))


class _NoSpan(Span):
    """What a disabled tracer gives: every call does nothing."""

    def __init__(self) -> None:
        super().__init__(None)

    def set(self, key: str, value: str | int | float | bool) -> None:
        pass

    def carrier(self) -> dict[str, str]:
        return {}

    def error(self, description: str) -> None:
        pass


NO_SPAN = _NoSpan()


class Tracing:
    """The spans of one component. The disabled one (the default) costs a method call per span."""

    def __init__(self, tracer: Any = None, provider: Any = None) -> None:
        self._tracer, self._provider = tracer, provider

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(
        self, name: str, *, parent: Mapping[str, str] | None = None, attributes: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[Span]:
        """A span named ``name``, the child of ``parent`` (a carrier from another process) when given."""
        if self._tracer is None:
            return contextlib.nullcontext(NO_SPAN)
        return self._recording(name, parent, attributes)

    @contextlib.contextmanager
    def _recording(
        self, name: str, parent: Mapping[str, str] | None, attributes: Mapping[str, Any] | None
    ) -> Iterator[Span]:
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract(dict(parent)) if parent else None
        kind = SpanKind.CONSUMER if parent is not None else SpanKind.PRODUCER
        with self._tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes) as span:
            yield Span(span)

    def shutdown(self) -> None:
        """Send what is left and stop (at the component's exit)."""
        if self._provider is not None:
            self._provider.shutdown()


DISABLED = Tracing()


def check_available() -> None:
    """Raise TracingUnavailable, saying what to install, unless the tracing extra is installed."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise TracingUnavailable(f"NOTI_TRACING_ENABLED needs OpenTelemetry: {EXTRA}") from None


def setup(settings: GatewaySettings | SenderSettings, service: str, exporter: Any = None) -> Tracing:
    """The component's tracing as the settings ask: disabled, or exporting over OTLP/HTTP.

    ``exporter`` (an OpenTelemetry ``SpanExporter``, e.g. the SDK's in-memory one in tests)
    replaces the OTLP exporter, and turns tracing on whatever the settings say.
    """
    if not settings.tracing_enabled and exporter is None:
        return DISABLED
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise TracingUnavailable(f"NOTI_TRACING_ENABLED needs OpenTelemetry: {EXTRA}") from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # No endpoint given: the exporter reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else localhost:4318.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_endpoint or None)))
    return Tracing(provider.get_tracer("noti"), provider)
