#!/usr/bin/env python3
"""Send Zipkin v2 spans to a Zipkin endpoint with real Zipkin clients.

Peer for meshgate's end-to-end tests. Run it with the peers venv python
($MESHGATE_PYTHON, installed by scripts/peers/install.sh):

  zipkin_send.py --client py_zipkin|otel --endpoint http://127.0.0.1:PORT
                 [--encoding json|proto] [--traces N] [--service NAME] [--deadline SECONDS]

  py_zipkin  py_zipkin's own tracer and SimpleHTTPTransport (which picks /api/v2/spans and the
             Content-Type from the encoding, and requires 202 Accepted). --encoding json sends
             Zipkin v2 JSON, proto sends zipkin.proto3 ListOfSpans. Per trace: a SERVER root
             span, a CLIENT child with a remote endpoint, an annotation and the tags Envoy
             writes on a failed call (error=true, http.status_code "503"), and a local child.
  otel       The OpenTelemetry Python SDK's Zipkin JSON exporter (opentelemetry-exporter-
             zipkin-json): per trace a SERVER root and a CLIENT child with ERROR status; the
             exporter must report SUCCESS. JSON only.

On success one JSON object is printed on stdout and the exit code is 0:
  {"client": ..., "encoding": ..., "requests": N,
   "spans": [{"trace_id", "span_id", "parent_id", "name", "kind", "service",
              "remote_service", "error", "tags", "annotations"}, ...]}
with ids exactly as the client sent them (hex; py_zipkin's 64-bit trace ids are 16 digits).
Exit codes: 1 a send failed, 2 usage error, 3 the --deadline ran out, 4 the client library is
not installed (the venv predates it: run scripts/peers/install.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time


def fail(msg: str, code: int = 1) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    print(f"zipkin_send: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="zipkin_send.py",
        description="Send Zipkin v2 spans with py_zipkin or the OpenTelemetry Zipkin exporter "
        "and print a JSON summary of what was sent.",
    )
    p.add_argument("--client", required=True, choices=["py_zipkin", "otel"])
    p.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:9411")
    p.add_argument("--encoding", choices=["json", "proto"], default="json")
    p.add_argument("--traces", type=int, default=3, help="traces to send (default 3)")
    p.add_argument("--service", default="mg-zipkin", help="local service name (default mg-zipkin)")
    p.add_argument("--deadline", type=float, default=60.0, help="limit for the whole run in seconds")
    a = p.parse_args(argv)
    if a.traces < 1:
        p.error("--traces must be >= 1")
    if a.client == "otel" and a.encoding != "json":
        p.error("--client otel sends JSON only (its protobuf exporter needs protobuf 3.x)")
    if not a.endpoint.startswith("http://"):
        p.error("--endpoint must be an http:// base URL")
    return a


def host_port(endpoint: str):
    rest = endpoint[len("http://"):].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host, int(port)


def summarize_json(payload: bytes):
    out = []
    for s in json.loads(payload):
        out.append(
            {
                "trace_id": s["traceId"],
                "span_id": s["id"],
                "parent_id": s.get("parentId", ""),
                "name": s.get("name", ""),
                "kind": s.get("kind", ""),
                "service": (s.get("localEndpoint") or {}).get("serviceName", ""),
                "remote_service": (s.get("remoteEndpoint") or {}).get("serviceName", ""),
                "error": "error" in (s.get("tags") or {}),
                "tags": s.get("tags") or {},
                "annotations": [a["value"] for a in s.get("annotations") or []],
            }
        )
    return out


def summarize_proto(payload: bytes):
    from py_zipkin.encoding.protobuf import zipkin_pb2

    kinds = {0: "", 1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
    out = []
    for s in zipkin_pb2.ListOfSpans.FromString(payload).spans:
        out.append(
            {
                "trace_id": s.trace_id.hex(),
                "span_id": s.id.hex(),
                "parent_id": s.parent_id.hex(),
                "name": s.name,
                "kind": kinds.get(s.kind, str(s.kind)),
                "service": s.local_endpoint.service_name,
                "remote_service": s.remote_endpoint.service_name,
                "error": "error" in s.tags,
                "tags": dict(s.tags),
                "annotations": [a.value for a in s.annotations],
            }
        )
    return out


def send_py_zipkin(a):
    try:
        from py_zipkin import Kind
        from py_zipkin.encoding import Encoding
        from py_zipkin.transport import SimpleHTTPTransport
        from py_zipkin.zipkin import zipkin_span
    except ImportError as e:
        fail(f"py_zipkin is not installed ({e}); run scripts/peers/install.sh", 4)
    if a.encoding == "proto":
        from py_zipkin.encoding import protobuf

        if not protobuf.installed():
            fail("py_zipkin's protobuf support is not available", 4)

    class Recording(SimpleHTTPTransport):
        """py_zipkin's own HTTP transport (asserts 202), keeping each payload for the summary."""

        def __init__(self, host, port):
            super().__init__(host, port)
            self.payloads = []

        def send(self, payload):
            body = payload.encode("utf-8") if isinstance(payload, str) else payload
            self.payloads.append(body)
            super().send(body)

    host, port = host_port(a.endpoint)
    transport = Recording(host, port)
    encoding = Encoding.V2_JSON if a.encoding == "json" else Encoding.V2_PROTO3
    for i in range(a.traces):
        with zipkin_span(
            service_name=a.service,
            span_name=f"GET /checkout/{i}",
            transport_handler=transport,
            sample_rate=100.0,
            kind=Kind.SERVER,
            encoding=encoding,
            binary_annotations={"http.method": "GET", "component": "proxy"},
        ):
            with zipkin_span(
                service_name=a.service,
                span_name="reviews.default.svc.cluster.local:9080/*",
                kind=Kind.CLIENT,
                binary_annotations={"http.status_code": "503", "error": "true"},
            ) as client:
                client.add_sa_binary_annotation(port=9080, service_name="reviews", host="10.0.0.7")
                client.add_annotation("retry")
            with zipkin_span(service_name=a.service, span_name="render"):
                pass
    if not transport.payloads:
        fail("py_zipkin sent nothing")
    summarize = summarize_json if a.encoding == "json" else summarize_proto
    spans = [s for p in transport.payloads for s in summarize(p)]
    return {"requests": len(transport.payloads), "spans": spans}


def send_otel(a):
    try:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as e:
        fail(f"opentelemetry-exporter-zipkin-json is not installed ({e}); run scripts/peers/install.sh", 4)

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": a.service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("mg.zipkin_send", "1.0")
    for i in range(a.traces):
        with tracer.start_as_current_span(f"GET /cart/{i}", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.request.method", "GET")
            with tracer.start_as_current_span("call payments", kind=SpanKind.CLIENT) as child:
                child.set_attribute("peer.service", "payments")
                child.set_attribute("http.response.status_code", 500)
                child.add_event("retry", {"attempt": 2})
                child.set_status(Status(StatusCode.ERROR, "upstream reset"))
    spans = memory.get_finished_spans()
    exporter = ZipkinExporter(endpoint=f"{a.endpoint.rstrip('/')}/api/v2/spans", timeout=10)
    result = exporter.export(spans)
    exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        fail(f"ZipkinExporter.export returned {result}")
    kinds = {SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT"}
    summary = []
    for s in spans:
        ctx = s.get_span_context()
        summary.append(
            {
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_id": format(s.parent.span_id, "016x") if s.parent else "",
                "name": s.name,
                "kind": kinds.get(s.kind, ""),
                "service": a.service,
                "remote_service": "",
                "error": s.status.status_code is StatusCode.ERROR,
                "status_description": s.status.description or "",
                "tags": {},
                "annotations": [e.name for e in s.events],
            }
        )
    return {"requests": 1, "spans": summary}


def deadline_ran_out(seconds: float) -> None:
    print(f"zipkin_send: ERROR: the --deadline of {seconds}s ran out", file=sys.stderr, flush=True)
    os._exit(3)


def main(argv):
    a = parse_args(argv)
    timer = threading.Timer(a.deadline, deadline_ran_out, args=(a.deadline,))
    timer.daemon = True
    timer.start()
    t0 = time.monotonic()
    try:
        out = send_py_zipkin(a) if a.client == "py_zipkin" else send_otel(a)
    except SystemExit:
        raise
    except Exception as e:  # a failed send: the client raised (HTTP error, assertion on 202)
        fail(f"{a.client} send failed: {type(e).__name__}: {e}")
    timer.cancel()
    out.update({"client": a.client, "encoding": a.encoding, "seconds": round(time.monotonic() - t0, 3)})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
