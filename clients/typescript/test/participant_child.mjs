// The inventory participant for saga.test.mjs, as its own process: reserve/release over a
// JournalStore (effect and ledger entry in one transaction). Options (JSON in argv[2]): url,
// journal, crash ("after-commit": SIGKILL right after the first action's transaction committed,
// before its reply; "after-reply": right after the first reply was published, before the ack).
import { lib } from "./serve.mjs";

const opt = JSON.parse(process.argv[2]);
const client = new lib.ConvergeClient({ url: opt.url, timeoutMs: 20_000 });
const store = new lib.JournalStore(opt.journal);
const stop = new AbortController();
process.on("SIGTERM", () => stop.abort());
process.stdout.write("ready\n");

const ledger = {
  transaction: async (fn) => {
    const r = await store.transaction(fn);
    if (opt.crash === "after-commit") process.kill(process.pid, "SIGKILL");
    return r;
  },
  getEntry: (tx, s, step) => store.getEntry(tx, s, step),
  putEntry: (tx, s, step, e) => store.putEntry(tx, s, step, e),
};
if (opt.crash === "after-reply") {
  const publish = client.publish.bind(client);
  client.publish = async (...args) => {
    const r = await publish(...args);
    process.kill(process.pid, "SIGKILL");
    return r;
  };
}

await lib.runParticipant(client, {
  topic: "inventory",
  group: "inventory",
  ledger,
  actions: {
    "inventory.reserve": async (cmd, tx) => {
      const k = `reserved/${cmd.sagaId}`;
      tx.set(k, (tx.get(k) ?? 0) + 1);
      return { reservation: `r-${cmd.sagaId}` };
    },
  },
  compensations: {
    "inventory.release": async (cmd, tx) => {
      const k = `released/${cmd.sagaId}`;
      tx.set(k, (tx.get(k) ?? 0) + 1);
    },
  },
  signal: stop.signal,
  waitMs: 500,
});
process.stdout.write("stopped\n");
