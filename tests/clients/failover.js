// ioredis 5 with its defaults through a master failover that the Rust test
// drives: a subscriber on proxy A and a client blocked in BLPOP on proxy A,
// both on the shard whose master is replaced.
//
// Usage: node failover.js PROXY_A_PORT PROXY_B_PORT QUEUE CHANNEL. Prints
// "ready" once subscribed and with BLPOP sent, then waits for a line
// "switched" on stdin (the proxies route to the new master). Prints "all ok"
// at the end; exits 1 on the first failure.
const assert = require("assert");
const readline = require("readline");
const Redis = require("ioredis");

function withDeadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const [portA, portB] = process.argv.slice(2, 4).map(Number);
  const [queue, channel] = process.argv.slice(4, 6);
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const publisher = new Redis({ port: portB });
  const subscriber = new Redis({ port: portA });
  const messages = [];
  // The one waiter for the next message, if any: cleared when it takes
  // one, so a message that arrives while nobody waits stays queued (it
  // can arrive before PUBLISH's own reply).
  let waiter = null;
  subscriber.on("message", (ch, text) => {
    messages.push([ch, text]);
    if (waiter) {
      const take = waiter;
      waiter = null;
      take();
    }
  });
  const nextMessage = () =>
    withDeadline(
      new Promise((resolve) => {
        const take = () => (messages.length ? resolve(messages.shift()) : (waiter = take));
        take();
      }),
      5000,
      "a message",
    );
  assert.strictEqual(await subscriber.subscribe(channel), 1);
  assert.strictEqual(await publisher.publish(channel, "before"), 1);
  assert.deepStrictEqual(await nextMessage(), [channel, "before"]);

  const blocked = new Redis({ port: portA });
  const outcome = blocked.blpop(queue, 0).then(
    (value) => ({ value }),
    (error) => ({ error }),
  );
  console.log("ready");
  const line = await lines.next();
  assert.strictEqual(line.value, "switched");

  const { value, error } = await withDeadline(outcome, 10000, "the blocked BLPOP");
  assert.ok(error, `BLPOP returned ${JSON.stringify(value)}`);
  assert.ok(error.message.includes("its outcome is unknown"), error.message);
  console.log(`ok blocked BLPOP failed: ${error.message}`);

  // The same client goes on, on the new master.
  assert.strictEqual(await publisher.rpush(queue, "job"), 1);
  assert.deepStrictEqual(await blocked.blpop(queue, 5), [queue, "job"]);
  assert.strictEqual(await blocked.blpop(queue, 0.1), null);
  console.log("ok BLPOP on the new master");

  // The subscription followed the failover unseen.
  const end = Date.now() + 5000;
  for (;;) {
    const [, n] = await publisher.pubsub("NUMSUB", channel);
    if (n === 1) break;
    assert.ok(Date.now() < end, `NUMSUB ${n}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.strictEqual(await publisher.publish(channel, "after"), 1);
  assert.deepStrictEqual(await nextMessage(), [channel, "after"]);
  console.log("ok message after the failover");
  console.log("all ok");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
