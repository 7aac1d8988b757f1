// ioredis smoke test: default options, the same replies through shardproxy
// as from Redis directly. Usage: node smoke.js DIRECT_PORT PROXY_PORT.
const Redis = require("ioredis");

async function script(r) {
  const out = [];
  out.push(await r.ping());
  out.push(await r.set("js:a", "1"));
  out.push(await r.get("js:a"));
  out.push(await r.incrby("js:n", 5));
  const pairs = [];
  for (let i = 0; i < 20; i++) pairs.push(`js:k${i}`, String(i));
  out.push(await r.mset(...pairs));
  const keys = [];
  for (let i = 0; i < 20; i++) keys.push(`js:k${i}`);
  out.push(await r.mget(...keys, "js:missing"));
  out.push(await r.hset("js:h", "f1", "v1", "f2", "v2"));
  out.push(await r.hgetall("js:h"));
  out.push(await r.rpush("js:l", "a", "b", "c"));
  out.push(await r.lrange("js:l", 0, -1));
  out.push(await r.zadd("js:z", 1.5, "a", 2, "b"));
  out.push(await r.zrange("js:z", 0, -1, "WITHSCORES"));
  out.push(await r.exists("js:a", "js:h", "js:nope"));
  const pipe = r.pipeline();
  for (let i = 0; i < 50; i++) pipe.set(`js:p${i}`, String(i)).get(`js:p${i}`);
  out.push(await pipe.exec());
  // A transaction on one shard (hash tag), WATCH, and blocking pops.
  out.push(await r.multi().set("{js}:t", "1").incr("{js}:t").get("{js}:t").exec());
  await r.watch("{js}:t");
  out.push(await r.multi().incrby("{js}:t", 10).exec());
  out.push(await r.blpop("js:l", 1));
  out.push(await r.brpop("js:empty", 0.1));
  out.push(await r.del(...keys));
  out.push(await r.dbsize());
  // Whole-keyspace commands: SCAN's cursor is opaque to the client.
  const scanned = new Set();
  await new Promise((resolve, reject) => {
    const stream = r.scanStream({ match: "js:*", count: 5 });
    stream.on("data", (found) => found.forEach((k) => scanned.add(k)));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  out.push([...scanned].sort());
  out.push((await r.keys("js:*")).sort());
  try {
    await r.call("NOSUCHCOMMAND");
    out.push("no error");
  } catch (e) {
    out.push(`error: ${e.message}`);
  }
  out.push(await r.get("js:a"));
  return out;
}

async function main() {
  const [directPort, proxyPort] = process.argv.slice(2).map(Number);
  const direct = new Redis({ port: directPort });
  const proxy = new Redis({ port: proxyPort });
  await direct.flushall();
  const want = await script(direct);
  const got = await script(proxy);
  let failures = 0;
  want.forEach((w, i) => {
    if (JSON.stringify(w) !== JSON.stringify(got[i])) {
      failures++;
      console.log(`ioredis step ${i}: redis ${JSON.stringify(w)} proxy ${JSON.stringify(got[i])}`);
    }
  });
  try {
    await proxy.swapdb(0, 1);
    console.log("SWAPDB did not fail");
    failures++;
  } catch (e) {
    if (!e.message.includes("unsupported command")) throw e;
  }
  if ((await proxy.ping()) !== "PONG") failures++;
  console.log(`ioredis ${require("ioredis/package.json").version}: ${want.length} steps compared, ${failures} mismatches`);
  direct.disconnect();
  proxy.disconnect();
  process.exit(failures ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
