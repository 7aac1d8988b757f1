"""redis-py with its defaults through a master failover that the Rust test
drives: a subscriber on proxy A and a client blocked in BLPOP on proxy A,
both on the shard whose master is replaced.

Usage: failover.py PROXY_A_PORT PROXY_B_PORT QUEUE CHANNEL [PROTOCOL], the
protocol being redis-py's default when not given. Prints "ready"
once subscribed and with BLPOP sent, then waits for a line "switched" on
stdin (the proxies route to the new master). Prints "all ok" at the end;
raises (exit 1) on the first failure."""

import sys
import threading
import time

import redis


def next_message(pubsub, deadline):
    end = time.time() + deadline
    while time.time() < end:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return message
    raise AssertionError(f"no message within {deadline} s")


def main():
    port_a, port_b = int(sys.argv[1]), int(sys.argv[2])
    queue, channel = sys.argv[3], sys.argv[4]
    kwargs = {"protocol": int(sys.argv[5])} if len(sys.argv) > 5 else {}
    print(f"redis-py {redis.__version__}, {kwargs or 'default protocol'}")
    publisher = redis.Redis(port=port_b, **kwargs)
    pubsub = redis.Redis(port=port_a, **kwargs).pubsub()
    pubsub.subscribe(channel)
    message = pubsub.get_message(timeout=5)
    assert message and message["type"] == "subscribe", message
    assert publisher.publish(channel, "before") == 1
    assert next_message(pubsub, 5)["data"] == b"before"

    blocked = redis.Redis(port=port_a, **kwargs)
    outcome = {}

    def pop():
        try:
            outcome["value"] = blocked.blpop([queue], timeout=0)
        except Exception as e:  # what the client sees, checked below
            outcome["error"] = e

    popping = threading.Thread(target=pop, daemon=True)
    popping.start()
    print("ready", flush=True)
    line = sys.stdin.readline().strip()
    assert line == "switched", line

    popping.join(10)
    assert not popping.is_alive(), "BLPOP still blocked 10 s after the failover"
    error = outcome.get("error")
    assert isinstance(error, redis.ResponseError), outcome
    assert "its outcome is unknown" in str(error), error
    print(f"ok blocked BLPOP failed: {error}")

    # The same client goes on, on the new master.
    assert publisher.rpush(queue, "job") == 1
    assert list(blocked.blpop([queue], timeout=5)) == [queue.encode(), b"job"]
    assert blocked.blpop([queue], timeout=0.1) is None
    print("ok BLPOP on the new master")

    # The subscription followed the failover unseen.
    end = time.time() + 5
    while publisher.pubsub_numsub(channel) != [(channel.encode(), 1)]:
        assert time.time() < end, publisher.pubsub_numsub(channel)
        time.sleep(0.01)
    assert publisher.publish(channel, "after") == 1
    message = next_message(pubsub, 5)
    assert (message["channel"], message["data"]) == (channel.encode(), b"after"), message
    print("ok message after the failover")
    print("all ok")


main()
