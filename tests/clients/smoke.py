"""redis-py smoke test: default options, the same replies through shardproxy
as from Redis directly, in the protocol redis-py picks by default and in
RESP2. Usage: smoke.py DIRECT_PORT PROXY_PORT. Exits non-zero on mismatch."""

import sys

import redis


def script(r, p):
    out = []
    out.append(r.ping())
    out.append(r.set(f"{p}:a", "1"))
    out.append(r.get(f"{p}:a"))
    out.append(r.incr(f"{p}:n", 5))
    out.append(r.mset({f"{p}:k{i}": i for i in range(20)}))
    out.append(r.mget([f"{p}:k{i}" for i in range(20)] + [f"{p}:missing"]))
    out.append(r.hset(f"{p}:h", mapping={"f1": "v1", "f2": "v2"}))
    out.append(r.hgetall(f"{p}:h"))
    out.append(r.rpush(f"{p}:l", "a", "b", "c"))
    out.append(r.lrange(f"{p}:l", 0, -1))
    out.append(r.sadd(f"{p}:s", "x", "y"))
    out.append(sorted(r.smembers(f"{p}:s")))
    out.append(r.zadd(f"{p}:z", {"a": 1.5, "b": 2}))
    out.append(r.zrange(f"{p}:z", 0, -1, withscores=True))
    out.append(r.expire(f"{p}:a", 100))
    out.append(r.ttl(f"{p}:a"))
    out.append(r.exists(f"{p}:a", f"{p}:h", f"{p}:nope"))
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"{p}:p{i}", i)
        pipe.get(f"{p}:p{i}")
    out.append(pipe.execute())
    # A transaction on one shard (hash tag), and optimistic locking.
    tx = r.pipeline(transaction=True)
    tx.set(f"{{{p}}}:t", 1).incr(f"{{{p}}}:t").get(f"{{{p}}}:t")
    out.append(tx.execute())

    def bump(pipe):
        value = int(pipe.get(f"{{{p}}}:t"))
        pipe.multi()
        pipe.set(f"{{{p}}}:t", value + 10)

    out.append(r.transaction(bump, f"{{{p}}}:t"))
    out.append(r.get(f"{{{p}}}:t"))
    # Blocking pops: data there, then a timeout.
    out.append(r.blpop([f"{p}:l"], timeout=1))
    out.append(r.brpop([f"{p}:empty"], timeout=0.1))
    out.append(r.get(f"{p}:a"))
    out.append(r.delete(*[f"{p}:k{i}" for i in range(20)]))
    out.append(r.client_setname("smoke"))
    out.append(r.client_getname())
    out.append(r.dbsize())
    # Whole-keyspace commands: SCAN's cursor is opaque to the client.
    out.append(sorted(set(r.scan_iter(match=f"{p}:*", count=5))))
    out.append(sorted(r.keys(f"{p}:*")))
    out.append(r.script_exists(r.script_load("return 1"))[0])
    out.append(r.eval("return ARGV[1]", 0, "keyless"))
    try:
        r.execute_command("NOSUCHCOMMAND")
        out.append("no error")
    except redis.ResponseError as e:
        out.append(f"error: {e}")
    out.append(r.get(f"{p}:a"))
    return out


def main():
    direct_port, proxy_port = int(sys.argv[1]), int(sys.argv[2])
    failures = 0
    for protocol in (None, 2, 3):
        kwargs = {} if protocol is None else {"protocol": protocol}
        direct = redis.Redis(port=direct_port, **kwargs)
        proxy = redis.Redis(port=proxy_port, **kwargs)
        # Fresh keys for each round: the proxy's servers keep the last round's.
        prefix = f"py{protocol}"
        want = script(direct, prefix)
        got = script(proxy, prefix)
        for i, (w, g) in enumerate(zip(want, got)):
            if w != g:
                failures += 1
                print(f"redis-py protocol={protocol} step {i}: redis {w!r} proxy {g!r}")
        # What the proxy refuses comes back as an error; the connection stays.
        try:
            proxy.swapdb(0, 1)
            print("SWAPDB did not fail")
            failures += 1
        except redis.ResponseError as e:
            assert "unsupported command" in str(e), e
        assert proxy.ping()
        assert proxy.info()["redis_version"]
    print(f"redis-py {redis.__version__}: {3 * len(want)} steps compared, {failures} mismatches")
    sys.exit(1 if failures else 0)


main()
