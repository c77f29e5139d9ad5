#!/usr/bin/env python3
"""Send telemetry to an OTLP endpoint with the real OpenTelemetry Python SDK.

Peer for meshgate's end-to-end tests. Run it with the peers venv python
($MESHGATE_PYTHON, installed by scripts/peers/install.sh):

  otel_send.py --signal traces|metrics|logs --protocol grpc|http --endpoint ENDPOINT
               [--count N] [--service NAME] [--compression none|gzip] [--run-id ID]
               [--batch-size N] [--timeout SECONDS] [--deadline SECONDS]
               [--header KEY=VALUE ...]

  grpc endpoint: 127.0.0.1:PORT          http endpoint: http://127.0.0.1:PORT
  (the http exporter posts to ENDPOINT/v1/traces, /v1/metrics, /v1/logs)

The SDK produces the data (TracerProvider / LoggerProvider / MeterProvider with
in-memory processors/readers); the OTLP exporter's export() is then called on exactly
that data and its result must be SUCCESS. On success one JSON object describing
what was sent is printed on stdout and the exit code is 0. On any export failure a
message goes to stderr and the exit code is 1; 2 is a usage error; 3 means the
overall --deadline ran out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

SERVICE_DEFAULT = "mg-python"
SPANS_PER_TRACE = 5
UPSTREAM_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


def fail(msg: str, code: int = 1) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    print(f"otel_send: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="otel_send.py",
        description="Send traces, metrics or logs with the OpenTelemetry Python SDK over OTLP "
        "and print a JSON summary of what was sent.",
    )
    p.add_argument("--signal", required=True, choices=["traces", "metrics", "logs"])
    p.add_argument("--protocol", required=True, choices=["grpc", "http"])
    p.add_argument(
        "--endpoint",
        required=True,
        help="grpc: HOST:PORT (e.g. 127.0.0.1:4317); http: base URL (e.g. http://127.0.0.1:4318)",
    )
    p.add_argument("--count", type=int, default=10, help="spans / log records / counter points (default 10)")
    p.add_argument("--service", default=SERVICE_DEFAULT, help=f"resource service.name (default {SERVICE_DEFAULT})")
    p.add_argument("--compression", choices=["none", "gzip"], default="none")
    p.add_argument("--run-id", default="", help="resource attribute mg.run_id (and span/log attribute)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="max spans/log records per export request (default 512); metrics go in one request",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="per-export timeout in seconds (default 10)")
    p.add_argument(
        "--deadline", type=float, default=120.0, help="hard limit for the whole run in seconds (default 120)"
    )
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="extra request header")
    a = p.parse_args(argv)
    if a.count < 1:
        p.error("--count must be >= 1")
    if a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if a.timeout <= 0 or a.deadline <= 0:
        p.error("--timeout and --deadline must be > 0")
    headers = {}
    for h in a.header:
        if "=" not in h:
            p.error(f"--header {h!r}: expected KEY=VALUE")
        k, v = h.split("=", 1)
        headers[k.strip().lower()] = v.strip()
    a.headers = headers
    if a.protocol == "http" and not a.endpoint.startswith(("http://", "https://")):
        p.error("--protocol http needs a base URL such as http://127.0.0.1:4318")
    return a


def start_watchdog(seconds: float) -> None:
    def expire():
        print(f"otel_send: ERROR: gave up after --deadline {seconds:g}s", file=sys.stderr, flush=True)
        os._exit(3)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()


# ---------------------------------------------------------------------------------------
# exporters


def make_exporter(args):
    signal, timeout, headers = args.signal, args.timeout, (args.headers or None)
    if args.protocol == "grpc":
        import grpc

        compression = grpc.Compression.Gzip if args.compression == "gzip" else grpc.Compression.NoCompression
        kw = dict(endpoint=args.endpoint, timeout=timeout, compression=compression, headers=headers)
        if not args.endpoint.startswith("https://"):
            kw["insecure"] = True
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**kw)
        if signal == "logs":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

            return OTLPLogExporter(**kw)
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**kw)

    from opentelemetry.exporter.otlp.proto.http import Compression

    compression = Compression.Gzip if args.compression == "gzip" else Compression.NoCompression
    url = args.endpoint.rstrip("/") + "/v1/" + signal
    kw = dict(endpoint=url, timeout=timeout, compression=compression, headers=headers)
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kw)
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**kw)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(**kw)


def export_batches(exporter, items, batch_size, what):
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        t0 = time.monotonic()
        result = exporter.export(batch)
        if getattr(result, "name", str(result)) != "SUCCESS":
            fail(
                f"export of {what} {start}..{start + len(batch) - 1} returned {result} "
                f"after {time.monotonic() - t0:.1f}s (see exporter log above)"
            )


def resource_for(args):
    from opentelemetry.sdk.resources import Resource

    attrs = {"service.name": args.service}
    if args.run_id:
        attrs["mg.run_id"] = args.run_id
    return Resource.create(attrs)


def hex_ids(ctx):
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def jsonable(attrs):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(attrs or {}).items()}


# ---------------------------------------------------------------------------------------
# traces


def span_attributes(i, run_id):
    attrs = {
        "http.method": "GET",
        "http.status_code": "200",  # Envoy/Istio send it as a string
        "upstream_cluster": UPSTREAM_CLUSTER,
        "component": "proxy",
        "mg.seq": i,
        "mg.latency_ms": 1.25 + i,
        "mg.sampled": i % 2 == 0,
        "mg.tags": ["mesh", "istio", f"seq-{i}"],
    }
    if run_id:
        attrs["mg.run_id"] = run_id
    return attrs


def send_traces(args):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    collected = InMemorySpanExporter()
    provider = TracerProvider(resource=resource_for(args))
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("meshgate.tests.otel_send", "1.0.0")

    n = args.count
    i = 0
    while i < n:
        # one trace: a root SERVER span and up to 4 children alternating CLIENT / INTERNAL
        root = tracer.start_span(
            f"ingress GET /productpage #{i}",
            kind=trace.SpanKind.SERVER,
            attributes={**span_attributes(i, args.run_id), "http.url": f"http://productpage:9080/productpage?i={i}"},
        )
        root.add_event("mg.request.received", {"mg.seq": i})
        parent_ctx = trace.set_span_in_context(root)
        i += 1
        for j in range(1, SPANS_PER_TRACE):
            if i >= n:
                break
            kind = trace.SpanKind.CLIENT if j % 2 == 1 else trace.SpanKind.INTERNAL
            name = f"egress reviews.default.svc.cluster.local:9080 #{i}" if kind == trace.SpanKind.CLIENT else f"router #{i}"
            child = tracer.start_span(name, context=parent_ctx, kind=kind, attributes=span_attributes(i, args.run_id))
            child.end()
            i += 1
        root.end()

    spans = sorted(collected.get_finished_spans(), key=lambda s: s.attributes["mg.seq"])
    if len(spans) != n:
        fail(f"SDK produced {len(spans)} spans, expected {n}")

    exporter = make_exporter(args)
    try:
        export_batches(exporter, list(spans), args.batch_size, "spans")
    finally:
        exporter.shutdown()
    provider.shutdown()

    out = []
    for s in spans:
        trace_id, span_id = hex_ids(s.context)
        out.append(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": f"{s.parent.span_id:016x}" if s.parent is not None else "",
                "name": s.name,
                "kind": s.kind.name,
                "attributes": jsonable(s.attributes),
                "events": [e.name for e in s.events],
            }
        )
    return {"spans": out}


# ---------------------------------------------------------------------------------------
# logs


def send_logs(args):
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider

    resource = resource_for(args)
    collected = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(collected))
    logger = provider.get_logger("meshgate.tests.otel_send", "1.0.0")
    # spans only give the log records their trace/span ids; they are not exported
    tracer = TracerProvider(resource=resource).get_tracer("meshgate.tests.otel_send")

    n = args.count
    i = 0
    while i < n:
        with tracer.start_as_current_span(f"log batch #{i}"):
            for _ in range(SPANS_PER_TRACE):
                if i >= n:
                    break
                error = i % 2 == 1
                attrs = {"mg.seq": i}
                if args.run_id:
                    attrs["mg.run_id"] = args.run_id
                logger.emit(
                    timestamp=time.time_ns(),
                    severity_number=SeverityNumber.ERROR if error else SeverityNumber.INFO,
                    severity_text="ERROR" if error else "INFO",
                    body=f"log {i}",
                    attributes=attrs,
                )
                i += 1

    records = list(collected.get_finished_logs())
    if len(records) != n:
        fail(f"SDK produced {len(records)} log records, expected {n}")
    for r in records:
        if not r.log_record.trace_id or not r.log_record.span_id:
            fail("SDK produced a log record without trace/span id")

    exporter = make_exporter(args)
    try:
        export_batches(exporter, records, args.batch_size, "log records")
    finally:
        exporter.shutdown()
    provider.shutdown()

    out = []
    for r in records:
        lr = r.log_record
        out.append(
            {
                "body": lr.body,
                "severity_text": lr.severity_text,
                "severity_number": lr.severity_number.value,
                "trace_id": f"{lr.trace_id:032x}",
                "span_id": f"{lr.span_id:016x}",
                "attributes": jsonable(lr.attributes),
            }
        )
    return {"logs": out}


# ---------------------------------------------------------------------------------------
# metrics


def send_metrics(args):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource_for(args), metric_readers=[reader])
    meter = provider.get_meter("meshgate.tests.otel_send", "1.0.0")
    counter = meter.create_counter("mg.test.requests", unit="1", description="meshgate test requests")
    histogram = meter.create_histogram("mg.test.latency", unit="ms", description="meshgate test latency")

    n = args.count
    for i in range(n):
        counter.add(i + 1, {"i": i})  # N distinct points; point i has value i+1
    histogram.record(12.5)

    data = reader.get_metrics_data()
    names, points = [], []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                names.append(m.name)
                for dp in m.data.data_points:
                    if isinstance(dp, NumberDataPoint):
                        value = dp.value
                    elif isinstance(dp, HistogramDataPoint):
                        value = {
                            "count": dp.count,
                            "sum": dp.sum,
                            "min": dp.min,
                            "max": dp.max,
                            "explicit_bounds": list(dp.explicit_bounds),
                            "bucket_counts": list(dp.bucket_counts),
                        }
                    else:  # not produced by this script
                        value = None
                    points.append(
                        {
                            "name": m.name,
                            "type": type(m.data).__name__.lower(),  # "sum" / "histogram"
                            "attributes": jsonable(dp.attributes),
                            "value": value,
                        }
                    )
    if len(points) != n + 1:
        fail(f"SDK produced {len(points)} metric points, expected {n + 1}")
    points.sort(key=lambda p: (p["name"] != "mg.test.requests", p["attributes"].get("i", 0)))

    exporter = make_exporter(args)
    try:
        t0 = time.monotonic()
        result = exporter.export(data, timeout_millis=args.timeout * 1000)
        if result.name != "SUCCESS":
            fail(f"export of {len(points)} metric points returned {result} after {time.monotonic() - t0:.1f}s")
    finally:
        exporter.shutdown()

    return {"metrics": names, "points": points}


# ---------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start_watchdog(args.deadline)
    # exporter problems (connection refused, HTTP 4xx/5xx, gRPC status) are logged by the SDK
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="otel_send: %(name)s: %(message)s")
    # the SDK's own periodic/atexit machinery must never export anywhere else
    for var in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
        os.environ[var] = "none"

    t0 = time.monotonic()
    try:
        body = {"traces": send_traces, "logs": send_logs, "metrics": send_metrics}[args.signal](args)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any SDK/exporter exception is a failed send
        logging.getLogger("otel_send").exception("unexpected error")
        fail(f"{type(e).__name__}: {e}")

    sent = len(body["points"]) if args.signal == "metrics" else args.count
    summary = {
        "signal": args.signal,
        "protocol": args.protocol,
        "endpoint": args.endpoint,
        "compression": args.compression,
        "service": args.service,
        "run_id": args.run_id,
        "sent": sent,
        "elapsed_s": round(time.monotonic() - t0, 3),
        **body,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
