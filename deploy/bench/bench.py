#!/usr/bin/env python3
"""Helpers for deploy/bench/run.sh (standard library only).

  ports N                    print N free loopback ports
  preload PORT PREFIX COUNT SIZE
                             SET PREFIX<12-digit i> to SIZE bytes, i < COUNT
                             (redis-benchmark's __rand_int__ key format)
  idle PID PORT N            open N client connections to PORT, each sends
                             one PING and reads +PONG, then idles; prints the
                             growth of PID's VmRSS per connection in bytes
  table RESULTS              print the results table (medians over rounds)

RESULTS holds one tab-separated line per measurement:
  case <TAB> target <TAB> value ...  (req/s p50 p99, or bytes per connection)
"""

import resource
import socket
import math
import statistics
import struct
import sys
import time


def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("connection closed by the server")
        data += chunk
    return data


def preload(port, prefix, count, size):
    value = b"x" * size
    batch = 1000
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for start in range(0, count, batch):
            out = bytearray()
            end = min(start + batch, count)
            for i in range(start, end):
                key = b"%s%012d" % (prefix.encode(), i)
                out += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                    len(key), key, size, value)
            sock.sendall(out)
            expected = b"+OK\r\n" * (end - start)
            got = read_exactly(sock, len(expected))
            if got != expected:
                raise SystemExit(f"preload on port {port}: unexpected reply {got[:80]!r}")


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def ping(sock):
    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
    reply = read_exactly(sock, 7)
    if reply != b"+PONG\r\n":
        raise SystemExit(f"PING: unexpected reply {reply!r}")


def idle(pid, port, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 100:
        raise SystemExit(f"open file limit {hard} is too low for {n} connections")
    # One connection first, so one-time set-up is not counted per connection.
    with socket.create_connection(("127.0.0.1", port)) as warm:
        ping(warm)
    time.sleep(0.3)
    before = rss_bytes(pid)
    socks = []
    # Close with a reset (linger 0): no TIME_WAIT, so ephemeral ports last.
    linger = struct.pack("ii", 1, 0)
    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            socks.append(sock)
            ping(sock)
        time.sleep(0.5)
        after = rss_bytes(pid)
        # Every session must still be alive after idling.
        for sock in socks[:: max(1, n // 50)]:
            ping(sock)
    finally:
        for sock in socks:
            sock.close()
    print(round((after - before) / n))


def median(values):
    return statistics.median(values) if values else None


def table(path):
    rows = {}
    cases, targets = [], []
    with open(path) as results:
        for line in results:
            case, target, *values = line.rstrip("\n").split("\t")
            if case not in cases:
                cases.append(case)
            if target not in targets:
                targets.append(target)
            rows.setdefault((case, target), []).append([float(v) for v in values])

    def stat(case, target, i):
        runs = rows.get((case, target), [])
        return median([run[i] for run in runs if len(run) > i])

    def spread(case, target):
        """Half the range of req/s over the rounds, relative to the median."""
        values = [run[0] for run in rows[(case, target)]]
        return (max(values) - min(values)) / 2 / median(values) * 100

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else ""

    print("| case | target | req/s | spread | p50 ms | p99 ms | CPU us/req | kernel us/req "
          "| req/s vs nutcracker | p99 vs nutcracker | CPU vs nutcracker | req/s vs direct |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        memory = case.startswith("idle")
        for target in targets:
            if (case, target) not in rows:
                continue
            value = stat(case, target, 0)
            is_shardproxy = target.startswith("shardproxy")
            if memory:
                nc = stat(case, "nutcracker", 0)
                vs_nc = ratio(value, nc) if is_shardproxy else ""
                print(f"| {case} | {target} | {value / 1024:.1f} KiB/conn | | | | | "
                      f"| {vs_nc} | | | |")
                continue
            p50, p99 = stat(case, target, 1), stat(case, target, 2)
            cpu = stat(case, target, 3)
            cpu_text = f"{cpu:.2f}" if cpu is not None and not math.isnan(cpu) else ""
            kernel = stat(case, target, 4)
            kernel_text = f"{kernel:.2f}" if kernel is not None and not math.isnan(kernel) else ""
            vs_nc = vs_nc_p99 = vs_nc_cpu = vs_direct = ""
            if is_shardproxy:
                vs_nc = ratio(value, stat(case, "nutcracker", 0))
                vs_nc_p99 = ratio(p99, stat(case, "nutcracker", 2))
                vs_nc_cpu = ratio(cpu, stat(case, "nutcracker", 3)) if cpu_text else ""
                vs_direct = ratio(value, stat(case, "direct", 0))
            print(f"| {case} | {target} | {value:,.0f} | ±{spread(case, target):.0f}% "
                  f"| {p50:.3f} | {p99:.3f} | {cpu_text} | {kernel_text} | {vs_nc} | {vs_nc_p99} "
                  f"| {vs_nc_cpu} "
                  f"| {vs_direct} |")
    if "direct" in targets:
        # The CPU of every process per request: a target's throughput is at
        # most the machine's cores divided by the sum. Redis's kernel part
        # in a direct row is what serving these clients' sockets costs; a
        # proxy does the same socket work for the same clients, so that is
        # a floor under the proxy's own kernel time.
        print()
        print("| case | target | client us/req | Redis us/req | Redis kernel us/req "
              "| proxy us/req | total us/req | total vs direct |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for case in cases:
            if case.startswith("idle"):
                continue
            direct_total = None
            for target in targets:
                parts = [stat(case, target, i) for i in (6, 5, 3)]
                if (case, target) not in rows or parts[0] is None or parts[1] is None:
                    continue
                if parts[2] is None or math.isnan(parts[2]):
                    parts[2] = 0.0
                total = sum(parts)
                is_direct = target.startswith("direct")
                if target == "direct":
                    direct_total = total
                proxy = "" if is_direct else f"{parts[2]:.2f}"
                vs_direct = "" if is_direct else ratio(total, direct_total)
                redis_kernel = stat(case, target, 7)
                redis_kernel = "" if redis_kernel is None else f"{redis_kernel:.2f}"
                print(f"| {case} | {target} | {parts[0]:.2f} | {parts[1]:.2f} | {redis_kernel} "
                      f"| {proxy} | {total:.2f} | {vs_direct} |")
    if "nutcracker" in targets:
        # Each round's ratios: the medians above hide how far rounds differ.
        print()
        print("| case | target | CPU vs nutcracker, per round | req/s vs nutcracker, per round |")
        print("|---|---|---|---|")
        for case in cases:
            nc_runs = rows.get((case, "nutcracker"), [])
            if case.startswith("idle") or not nc_runs:
                continue
            for target in targets:
                if not target.startswith("shardproxy") or (case, target) not in rows:
                    continue
                pairs = list(zip(rows[(case, target)], nc_runs))

                def per_round(i):
                    return " ".join(f"{a[i] / b[i]:.2f}" if len(a) > i and len(b) > i and b[i]
                                    and not math.isnan(a[i] / b[i]) else "-"
                                    for a, b in pairs)
                print(f"| {case} | {target} | {per_round(3)} | {per_round(0)} |")
    if "shardproxy-base" in targets and "shardproxy" in targets:
        # The build under test against the baseline build, same rounds.
        print()
        print("| case | shardproxy / shardproxy-base req/s | CPU us/req | p99 "
              "| req/s vs nutcracker base -> now | CPU vs nutcracker base -> now |")
        print("|---|---:|---:|---:|---:|---:|")
        for case in cases:
            now, base = "shardproxy", "shardproxy-base"
            if case.startswith("idle"):
                print(f"| {case} | {stat(case, base, 0) / 1024:.1f} -> "
                      f"{stat(case, now, 0) / 1024:.1f} KiB/conn | | | | |")
                continue
            print(f"| {case} | {ratio(stat(case, now, 0), stat(case, base, 0))} "
                  f"| {ratio(stat(case, now, 3), stat(case, base, 3))} "
                  f"| {ratio(stat(case, now, 2), stat(case, base, 2))} "
                  f"| {ratio(stat(case, base, 0), stat(case, 'nutcracker', 0))} -> "
                  f"{ratio(stat(case, now, 0), stat(case, 'nutcracker', 0))} "
                  f"| {ratio(stat(case, base, 3), stat(case, 'nutcracker', 3))} -> "
                  f"{ratio(stat(case, now, 3), stat(case, 'nutcracker', 3))} |")
    if "shardproxy-tls" in targets:
        # What TLS costs: each TLS row against its plain twin, same run.
        print()
        print("| case | shardproxy req/s TLS / plain | shardproxy CPU us/req TLS / plain "
              "| Redis req/s TLS / plain |")
        print("|---|---:|---:|---:|")
        for case in cases:
            if case.startswith("idle"):
                continue
            print(f"| {case} "
                  f"| {ratio(stat(case, 'shardproxy-tls', 0), stat(case, 'shardproxy', 0))} "
                  f"| {ratio(stat(case, 'shardproxy-tls', 3), stat(case, 'shardproxy', 3))} "
                  f"| {ratio(stat(case, 'direct-tls', 0), stat(case, 'direct', 0))} |")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "ports":
        ports(int(args[0]))
    elif command == "preload":
        preload(int(args[0]), args[1], int(args[2]), int(args[3]))
    elif command == "idle":
        idle(int(args[0]), int(args[1]), int(args[2]))
    elif command == "table":
        table(args[0])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
