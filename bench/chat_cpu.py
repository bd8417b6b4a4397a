#!/usr/bin/env python3
"""A router's CPU per streamed chat request, net of what it spends idle.

Sends REQUESTS streamed `POST /v1/chat/completions` one after another on one
keep-alive connection (a 1 KiB prompt from 16 shared prefixes, MAX_TOKENS
output tokens), reads each to its end, and reads the router process's CPU
time (utime+stime of it and its threads, from /proc) before and after. Then
it leaves the router idle for as long as the requests took and subtracts
what the router spent in that time (health checks, load polling): what is
left is the CPU the requests cost. Requests that stall do not inflate the
figure, since a stall costs no CPU and its wall time is charged to the
idle window too.

With `tools` as the fifth argument each request offers a tool
(`get_weather`) and its response must carry a parsed call.

Usage: python3 bench/chat_cpu.py PID PORT [REQUESTS] [MAX_TOKENS] [tools]
(bench/chat.sh SEQUENTIAL=N runs it against both routers.)
"""
import http.client
import json
import os
import sys
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Each run's questions are its own: a router that keeps the ids of text it
# has seen tokenizes every message afresh, as it would a user's.
RUN = os.getpid()


def prompt(i):
    prefix = (f"shared context {i % 16}: " * 64)[:960]
    return prefix + (f" question {RUN}-{i}: " * 8)[:64]


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    tools = len(sys.argv) > 5 and sys.argv[5] == "tools"
    conn = http.client.HTTPConnection("127.0.0.1", port)
    stalls, events = 0, 0
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    for i in range(requests):
        request = {
            "model": "chat",
            "messages": [{"role": "user", "content": prompt(i)}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        if tools:
            request["tools"] = [{"type": "function", "function": {
                "name": "get_weather", "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {
                    "city": {"type": "string"}, "unit": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"]}}}]
        body = json.dumps(request)
        t = time.monotonic()
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, (response.status, data[:200])
        if tools:
            assert b'"tool_calls"' in data and b"get_weather" in data, data[-600:]
        events += data.count(b"data: ")
        stalls += time.monotonic() - t > 1.0
    busy_cpu, wall = cpu_seconds(pid) - start_cpu, time.monotonic() - start
    idle_start = cpu_seconds(pid)
    time.sleep(wall)
    idle_cpu = cpu_seconds(pid) - idle_start
    net = max(busy_cpu - idle_cpu, 0.0)
    print(json.dumps({
        "requests": requests,
        "wall_s": round(wall, 2),
        "stalled_over_1s": stalls,
        "sse_events_per_request": round(events / requests, 1),
        "cpu_s_with_requests": round(busy_cpu, 3),
        "cpu_s_idle_same_time": round(idle_cpu, 3),
        "cpu_us_per_request": round(net / requests * 1e6),
    }))


if __name__ == "__main__":
    main()
