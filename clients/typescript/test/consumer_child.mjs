// A consumer process for consumer.test.mjs: consumes with the inbox over a JournalStore whose
// effect counts each event and records each key's order. Options (JSON in argv[2]):
// url, topic, group, journal, mode, crashAfter (SIGKILL itself right after that many
// committed effects, before their ack). SIGTERM stops it gracefully (exit 0).
import { lib } from "./serve.mjs";

const opt = JSON.parse(process.argv[2]);
const client = new lib.ConvergeClient({ url: opt.url, timeoutMs: 20_000 });
const store = new lib.JournalStore(opt.journal);
const stop = new AbortController();
process.on("SIGTERM", () => stop.abort());
process.stdout.write("ready\n");
let commits = 0;

const handler = lib.inboxHandler(store, async (event, tx) => {
  const { n, key, seq } = event.data;
  tx.set(`count/${n}`, (tx.get(`count/${n}`) ?? 0) + 1);
  const order = tx.get(`order/${key}`) ?? [];
  tx.set(`order/${key}`, [...order, seq]);
  // Slow enough that a kill lands in the middle of a batch.
  await new Promise((r) => setTimeout(r, opt.delayMs ?? 5));
});

await lib.consume(
  client,
  opt.topic,
  opt.group,
  async (event, ctx) => {
    await handler(event, ctx);
    commits++;
    process.stdout.write(`committed ${commits}\n`);
    if (opt.crashAfter !== undefined && commits >= opt.crashAfter) process.kill(process.pid, "SIGKILL");
  },
  { mode: opt.mode, signal: stop.signal, waitMs: 500, maxEvents: 10, concurrency: 4 },
);
process.stdout.write("stopped\n");
