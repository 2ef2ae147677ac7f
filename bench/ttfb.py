"""Median time from sending a streamed chat request to receiving its first SSE event, over N requests.

Usage: python3 ttfb.py HOST:PORT KEY N
The connection is opened before the clock starts, so connection set-up is not counted; the clock stops
at the first `data:` line of the body (not at the response headers), which is what a streaming client
waits for.
"""

import socket
import statistics
import sys
import time

BODY = b'{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'


def one(host, port, key):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
    ).encode()
    buf = b""
    start = time.perf_counter()
    s.sendall(head + BODY)
    while b"data:" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    elapsed = time.perf_counter() - start
    s.close()
    if b"data:" not in buf:
        raise SystemExit(f"no event from {host}:{port}: {buf[:200]!r}")
    return elapsed


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key, n = sys.argv[2], int(sys.argv[3])
    for _ in range(10):  # warm up
        one(host, int(port), key)
    samples = [one(host, int(port), key) for _ in range(n)]
    print(round(statistics.median(samples) * 1000, 3))


if __name__ == "__main__":
    main()
