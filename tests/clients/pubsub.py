"""redis-py pub/sub: the same subscriptions, messages and PUBSUB answers
through shardproxy as from Redis directly, in the protocol redis-py picks by
default, in RESP2 and in RESP3. Usage: pubsub.py DIRECT_PORT PROXY_PORT.
Prints ", 0 mismatches" and exits 0 when everything matched."""

import sys
import time

import redis


def drain(pubsub, n, deadline=5.0):
    """The next n messages (subscriptions included), in arrival order."""
    got = []
    end = time.time() + deadline
    while len(got) < n and time.time() < end:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            got.append(message)
    return got


def script(r, p):
    out = []
    pubsub = r.pubsub()
    channels = [f"{p}:ch{i}" for i in range(6)]
    pubsub.subscribe(*channels)
    pubsub.psubscribe(f"{p}:pat*")
    out.append(drain(pubsub, 7))
    for i, channel in enumerate(channels):
        out.append(r.publish(channel, f"m{i}"))
    out.append(r.publish(f"{p}:pattern", "via pattern"))
    # Channels on different shards reach the subscriber over different
    # connections, so only each channel's own order is kept (as in Redis
    # Cluster): compare the set of messages.
    out.append(sorted(drain(pubsub, 7), key=repr))
    out.append(r.pubsub_numsub(*channels, f"{p}:none"))
    out.append(r.pubsub_numpat())
    out.append(sorted(r.pubsub_channels(f"{p}:*")))
    pubsub.unsubscribe(channels[0])
    out.append(drain(pubsub, 1))
    out.append(r.publish(channels[0], "gone"))
    out.append(r.publish(channels[1], "still"))
    out.append(drain(pubsub, 1))
    pubsub.close()
    # Closing the connection releases the subscriptions: wait for it.
    end = time.time() + 5
    while time.time() < end and any(n for _, n in r.pubsub_numsub(*channels)):
        time.sleep(0.01)
    out.append(r.pubsub_numsub(*channels))
    return out


def main():
    direct_port, proxy_port = int(sys.argv[1]), int(sys.argv[2])
    failures = 0
    for protocol in (None, 2, 3):
        kwargs = {} if protocol is None else {"protocol": protocol}
        direct = redis.Redis(port=direct_port, **kwargs)
        proxy = redis.Redis(port=proxy_port, **kwargs)
        prefix = f"py{protocol}"
        want = script(direct, prefix)
        got = script(proxy, prefix)
        for i, (w, g) in enumerate(zip(want, got)):
            if w != g:
                failures += 1
                print(f"protocol {protocol} step {i}: direct {w!r} proxy {g!r}")
    print(f"redis-py {redis.__version__} pub/sub, {failures} mismatches")
    sys.exit(1 if failures else 0)


main()
