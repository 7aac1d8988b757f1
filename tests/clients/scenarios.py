"""redis-py with its defaults through a fleet of two proxies over three
shards: pub/sub across the proxies in the default protocol, RESP2 and RESP3,
MULTI/WATCH retry loops, SCAN over 100,000 keys, EVALSHA after SCRIPT LOAD.

Usage: scenarios.py PROXY_A_PORT PROXY_B_PORT NAMES_JSON, where NAMES_JSON
holds "channels" (names on every shard) and "keys" (one key per shard).
Prints one "ok ..." line per step; raises (exit 1) on the first failure."""

import json
import sys
import threading
import time

import redis


def next_message(pubsub, deadline):
    """The next message (not a confirmation), or fail after the deadline."""
    end = time.time() + deadline
    while time.time() < end:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return message
    raise AssertionError(f"no message within {deadline} s")


def pubsub_across_proxies(port_a, port_b, channels, protocol):
    kwargs = {} if protocol is None else {"protocol": protocol}
    subscriber = redis.Redis(port=port_a, **kwargs)
    publisher = redis.Redis(port=port_b, **kwargs)
    pubsub = subscriber.pubsub()
    pubsub.subscribe(*channels)
    pubsub.psubscribe("ch:*")
    confirmed = 0
    end = time.time() + 5
    while confirmed < len(channels) + 1:
        assert time.time() < end, f"{confirmed} confirmations within 5 s"
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            assert message["type"] in ("subscribe", "psubscribe"), message
            confirmed += 1
    want = set()
    for i, channel in enumerate(channels):
        text = f"m{i} over {protocol}"
        # The channel's subscriber and the pattern's: one client, twice.
        assert publisher.publish(channel, text) == 2, channel
        want.add(("message", None, channel, text))
        want.add(("pmessage", "ch:*", channel, text))
    got = set()
    for _ in want:
        m = next_message(pubsub, 5)
        pattern = m["pattern"].decode() if m["pattern"] else None
        got.add((m["type"], pattern, m["channel"].decode(), m["data"].decode()))
    # Channels of different shards arrive over different connections, so
    # only each channel's order is kept: compare as sets.
    assert got == want, (got ^ want)
    pubsub.close()
    end = time.time() + 5
    while any(n for _, n in publisher.pubsub_numsub(*channels)):
        assert time.time() < end, "subscriptions left after close"
        time.sleep(0.01)
    print(f"ok pub/sub across two proxies, protocol={protocol}: {len(got)} messages")


def watch_retry_loops(port_a, port_b):
    counter, log = "{c}py:counter", "{c}py:log"
    threads, rounds = 4, 40
    errors = []

    def work(port):
        r = redis.Redis(port=port)

        def bump(pipe):
            n = int(pipe.get(counter) or 0) + 1
            pipe.multi()
            pipe.set(counter, n)
            pipe.rpush(log, n)

        try:
            for _ in range(rounds):
                r.transaction(bump, counter)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    workers = [
        threading.Thread(target=work, args=(port_a if i % 2 else port_b,))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    r = redis.Redis(port=port_a)
    total = threads * rounds
    assert int(r.get(counter)) == total, r.get(counter)
    assert [int(v) for v in r.lrange(log, 0, -1)] == list(range(1, total + 1))
    print(f"ok MULTI/WATCH retry loops: {total} increments, none lost")


def scan_100000_keys(port_a, port_b):
    total = 100_000
    names = [f"py:scan:{i}" for i in range(total)]
    r = redis.Redis(port=port_a)
    pipe = r.pipeline(transaction=False)
    for start in range(0, total, 1000):
        pipe.mset({k: "v" for k in names[start : start + 1000]})
    assert all(pipe.execute())
    started = time.time()
    seen = list(redis.Redis(port=port_b).scan_iter(match="py:scan:*"))
    took = time.time() - started
    assert set(k.decode() for k in seen) == set(names), len(set(seen))
    print(
        f"ok SCAN over {total} keys: {len(seen)} returned "
        f"({len(seen) - len(set(seen))} twice) in {took:.1f} s"
    )


def evalsha_after_script_load(port_a, port_b, keys):
    script = "redis.call('set', KEYS[1], ARGV[1]) return redis.call('strlen', KEYS[1])"
    sha = redis.Redis(port=port_a).script_load(script)
    other = redis.Redis(port=port_b)
    assert other.script_exists(sha) == [True]
    for key in keys:
        assert other.evalsha(sha, 1, key, "py-value") == 8, key
        assert other.get(key) == b"py-value", key
    print(f"ok EVALSHA {sha} on {len(keys)} shards")


def main():
    port_a, port_b = int(sys.argv[1]), int(sys.argv[2])
    names = json.loads(sys.argv[3])
    print(f"redis-py {redis.__version__}")
    for protocol in (None, 2, 3):
        pubsub_across_proxies(port_a, port_b, names["channels"], protocol)
    watch_retry_loops(port_a, port_b)
    scan_100000_keys(port_a, port_b)
    evalsha_after_script_load(port_a, port_b, names["keys"])
    print("all ok")


main()
