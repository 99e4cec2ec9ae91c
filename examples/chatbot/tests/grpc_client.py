"""A gRPC client written by others (Python's grpcio and grpcio-health-checking) against the
chatbot, run by tests/grpc_python.rs:

    grpc_client.py APP_ADDR ADMIN_ADDR CHATBOT_PID

1. Check("") is SERVING; Ask answers; an empty question fails with INVALID_ARGUMENT, and
   /metrics shows it with error_type="INVALID_ARGUMENT".
2. With Watch("") and an AskStream open, SIGTERM: Watch and Check see NOT_SERVING, an Ask is
   still answered during the shutdown delay, and the stream ends with its last message and OK.

Prints one line per step; exits 1 with the reason on the first failure.
"""

import os
import queue
import signal
import sys
import threading
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SOON = 10.0


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def step(what):
    print(f"ok: {what}", flush=True)


# The chatbot's messages, encoded and decoded by hand (no generated code needed):
# AskRequest { string question = 1 }; AskChunk { string token = 1; bool done = 2;
# repeated Source sources = 3; string version = 4; bool reconnect = 5 }.
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ask_request(question):
    data = question.encode()
    return b"\x0a" + varint(len(data)) + data


def fields(message):
    """The fields of a protobuf message: {number: [value, ...]} (varints and bytes)."""
    out, i = {}, 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(message, i)
        elif wire == 2:
            size, i = read_varint(message, i)
            value, i = message[i : i + size], i + size
        elif wire == 1:
            value, i = message[i : i + 8], i + 8
        elif wire == 5:
            value, i = message[i : i + 4], i + 4
        else:
            fail(f"unexpected wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def read_varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def identity(b):
    return b


def main():
    app, admin, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app_channel = grpc.insecure_channel(app)
    admin_channel = grpc.insecure_channel(admin)
    health = health_pb2_grpc.HealthStub(admin_channel)
    ask = app_channel.unary_unary(
        "/chatbot.v1.Chatbot/Ask", request_serializer=ask_request, response_deserializer=identity
    )
    ask_stream = app_channel.unary_stream(
        "/chatbot.v1.Chatbot/AskStream",
        request_serializer=ask_request,
        response_deserializer=identity,
    )

    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=SOON).status
    if status != health_pb2.HealthCheckResponse.SERVING:
        fail(f"Check('') before SIGTERM: {status}")
    step("Check('') SERVING")
    reply = fields(ask("How do I size terminationGracePeriodSeconds?", timeout=SOON))
    if not reply.get(1) or not reply[1][0]:
        fail(f"Ask gave no answer: {reply}")
    step("Ask answered")
    try:
        ask("   ", timeout=SOON)
        fail("an empty question was answered")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            fail(f"empty question: {e.code()}")
    step("empty question: INVALID_ARGUMENT")
    metrics = urllib.request.urlopen(f"http://{admin}/metrics", timeout=SOON).read().decode()
    wanted = 'http_route="/chatbot.v1.Chatbot/Ask",http_response_status_code="200"'
    if not any(wanted in l and 'error_type="INVALID_ARGUMENT"' in l for l in metrics.splitlines()):
        fail(f"no INVALID_ARGUMENT series in /metrics:\n{metrics}")
    step("/metrics: error_type=\"INVALID_ARGUMENT\" on /chatbot.v1.Chatbot/Ask")

    # Watch("") in the background: every status with when it arrived.
    statuses = queue.Queue()
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))

    def follow():
        try:
            for r in watch:
                statuses.put((r.status, time.monotonic()))
        except grpc.RpcError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    first, _ = statuses.get(timeout=SOON)
    if first != health_pb2.HealthCheckResponse.SERVING:
        fail(f"Watch('') first status: {first}")
    step("Watch('') SERVING")

    stream = ask_stream("why do I get 502 during a deploy", timeout=SOON * 3)
    chunk = fields(next(stream))
    if not chunk.get(1):
        fail(f"AskStream's first message has no token: {chunk}")
    step("AskStream open, first token received")

    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    status, at = statuses.get(timeout=SOON)
    if status != health_pb2.HealthCheckResponse.NOT_SERVING:
        fail(f"Watch('') after SIGTERM: {status}")
    step(f"Watch('') NOT_SERVING {1000 * (at - sent):.1f} ms after SIGTERM")
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=SOON).status
    if status != health_pb2.HealthCheckResponse.NOT_SERVING:
        fail(f"Check('') after SIGTERM: {status}")
    step("Check('') NOT_SERVING")
    reply = fields(ask("what does exit code 4 mean", timeout=SOON))
    if not reply.get(1):
        fail("Ask during the delay gave no answer")
    step("Ask answered during the shutdown delay")

    last = None
    try:
        for message in stream:
            last = fields(message)
    except grpc.RpcError as e:
        fail(f"AskStream ended with {e.code()}: {e.details()}")
    if stream.code() != grpc.StatusCode.OK:
        fail(f"AskStream status: {stream.code()}")
    if last is None or not (last.get(2) or last.get(5)):
        fail(f"AskStream's last message is neither done nor reconnect: {last}")
    how = "reconnect" if last.get(5) else "done"
    step(f"AskStream ended with its last message ({how}) and OK")
    print("PASSED", flush=True)


if __name__ == "__main__":
    main()
