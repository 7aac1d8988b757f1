// ioredis 5 with its defaults (RESP2) through a fleet of two proxies over
// three shards: pub/sub across the proxies, MULTI/WATCH retry loops, SCAN
// over 100,000 keys (scanStream), EVALSHA after SCRIPT LOAD.
//
// Usage: node scenarios.js PROXY_A_PORT PROXY_B_PORT NAMES_JSON, where
// NAMES_JSON holds "channels" (names on every shard) and "keys" (one key per
// shard). Prints one "ok ..." line per step; exits 1 on the first failure.
const assert = require("assert");
const Redis = require("ioredis");

function withDeadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function pubsubAcrossProxies(portA, portB, channels) {
  const subscriber = new Redis({ port: portA });
  const publisher = new Redis({ port: portB });
  const want = new Set();
  const got = new Set();
  let allArrived;
  const arrived = new Promise((resolve) => (allArrived = resolve));
  const add = (entry) => {
    got.add(JSON.stringify(entry));
    if (got.size === channels.length * 2) allArrived();
  };
  subscriber.on("message", (channel, text) => add(["message", null, channel, text]));
  subscriber.on("pmessage", (pattern, channel, text) => add(["pmessage", pattern, channel, text]));
  assert.strictEqual(await subscriber.subscribe(...channels), channels.length);
  assert.strictEqual(await subscriber.psubscribe("ch:*"), channels.length + 1);
  for (const [i, channel] of channels.entries()) {
    const text = `js m${i}`;
    // The channel's subscriber and the pattern's: one client, twice.
    assert.strictEqual(await publisher.publish(channel, text), 2, channel);
    want.add(JSON.stringify(["message", null, channel, text]));
    want.add(JSON.stringify(["pmessage", "ch:*", channel, text]));
  }
  // Channels of different shards arrive over different connections, so
  // only each channel's order is kept: compare as sets.
  await withDeadline(arrived, 5000, "all messages");
  assert.deepStrictEqual([...got].sort(), [...want].sort());
  subscriber.disconnect();
  publisher.disconnect();
  console.log(`ok pub/sub across two proxies: ${got.size} messages`);
}

async function watchRetryLoops(portA, portB) {
  const counter = "{c}js:counter";
  const log = "{c}js:log";
  const workers = 4;
  const rounds = 40;
  let attempts = 0;
  const work = async (port) => {
    const r = new Redis({ port });
    for (let i = 0; i < rounds; i++) {
      for (;;) {
        attempts++;
        await r.watch(counter);
        const n = Number((await r.get(counter)) || 0) + 1;
        const result = await r.multi().set(counter, n).rpush(log, n).exec();
        if (result !== null) {
          assert.deepStrictEqual(result, [[null, "OK"], [null, n]]);
          break;
        }
      }
    }
    r.disconnect();
  };
  await Promise.all([...Array(workers).keys()].map((i) => work(i % 2 ? portA : portB)));
  const r = new Redis({ port: portA });
  const total = workers * rounds;
  assert.strictEqual(await r.get(counter), String(total));
  const values = (await r.lrange(log, 0, -1)).map(Number);
  assert.deepStrictEqual(values, [...Array(total).keys()].map((i) => i + 1));
  r.disconnect();
  console.log(`ok MULTI/WATCH retry loops: ${total} increments in ${attempts} attempts, none lost`);
}

async function scan100000Keys(portA, portB) {
  const total = 100000;
  const names = [...Array(total).keys()].map((i) => `js:scan:${i}`);
  const a = new Redis({ port: portA });
  const pipe = a.pipeline();
  for (let start = 0; start < total; start += 1000) {
    pipe.mset(...names.slice(start, start + 1000).flatMap((k) => [k, "v"]));
  }
  for (const [error, reply] of await pipe.exec()) {
    assert.strictEqual(error, null);
    assert.strictEqual(reply, "OK");
  }
  const b = new Redis({ port: portB });
  const started = Date.now();
  let returned = 0;
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const stream = b.scanStream({ match: "js:scan:*" });
    stream.on("data", (keys) => {
      returned += keys.length;
      keys.forEach((k) => seen.add(k));
    });
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  assert.strictEqual(seen.size, total);
  assert.ok(names.every((k) => seen.has(k)), "every key returned");
  console.log(`ok SCAN over ${total} keys: ${returned} returned in ${Date.now() - started} ms`);
  a.disconnect();
  b.disconnect();
}

async function evalshaAfterScriptLoad(portA, portB, keys) {
  const script = "redis.call('set', KEYS[1], ARGV[1]) return redis.call('strlen', KEYS[1])";
  const a = new Redis({ port: portA });
  const b = new Redis({ port: portB });
  const sha = await a.script("LOAD", script);
  assert.deepStrictEqual(await b.script("EXISTS", sha), [1]);
  for (const key of keys) {
    assert.strictEqual(await b.evalsha(sha, 1, key, "js-value"), 8, key);
    assert.strictEqual(await b.get(key), "js-value", key);
  }
  a.disconnect();
  b.disconnect();
  console.log(`ok EVALSHA ${sha} on ${keys.length} shards`);
}

async function main() {
  const [portA, portB] = process.argv.slice(2, 4).map(Number);
  const names = JSON.parse(process.argv[4]);
  console.log(`ioredis ${require("ioredis/package.json").version}`);
  await pubsubAcrossProxies(portA, portB, names.channels);
  await watchRetryLoops(portA, portB);
  await scan100000Keys(portA, portB);
  await evalshaAfterScriptLoad(portA, portB, names.keys);
  console.log("all ok");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
