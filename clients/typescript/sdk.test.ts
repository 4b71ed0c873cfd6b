// The TypeScript client (openapi-fetch over types generated from the
// committed spec) against a live server: `npm test` (KV_STORE_BIN names the
// server binary; default target/debug/kv-store).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { connect, deletePrefix, listAll } from "./usage.js";

// npm runs this from clients/typescript.
const root = path.resolve(process.cwd(), "../..");
let url = "";
let stop = () => {};
let openUrl = "";
let stopOpen = () => {};
let authDir = "";
// The server has an auth file, so every call carries this token.
const token = "kvs_typescript-sdk-tests";

before(async () => {
  const binary = process.env.KV_STORE_BIN ?? path.join(root, "target/debug/kv-store");
  // KV_STORE_ARGS adds flags (e.g. `--backend etcd ...`).
  const extra = (process.env.KV_STORE_ARGS ?? "").split(/\s+/).filter((arg) => arg !== "");
  authDir = mkdtempSync(path.join(tmpdir(), "kv-sdk-"));
  const authFile = path.join(authDir, "tokens.toml");
  const digest = createHash("sha256").update(token).digest("hex");
  writeFileSync(authFile, `[[token]]\nname = "ts-sdk"\nsha256 = "${digest}"\nwrite = [""]\n`);
  ({ url, stop } = await serve(binary, ["--auth-file", authFile, ...extra]));
  // And one without an auth file, as a first run is: no token needed.
  ({ url: openUrl, stop: stopOpen } = await serve(binary, extra));
});

after(() => {
  stop();
  stopOpen();
  rmSync(authDir, { recursive: true, force: true });
});

/** A server with `flags`; its URL, and how to stop it. */
async function serve(binary: string, flags: string[]): Promise<{ url: string; stop: () => void }> {
  const all = ["--listen", "127.0.0.1:0", "--rate-limit", "0", ...flags];
  const child = spawn(binary, all, {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, KV_ETCD_PREFIX: `sdk-${process.pid}/` },
  });
  const listening = await new Promise<string>((resolve, reject) => {
    let log = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      log += chunk;
      const match = /listening on (http:\/\/[0-9.:]+)/.exec(log);
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`server exited (${code}):\n${log}`)));
  });
  return { url: listening, stop: () => child.kill("SIGTERM") };
}

test("the README's example runs as written", async () => {
  const example = readFileSync("readme.ts", "utf8");
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  assert.ok(readme.includes("```ts\n" + example + "```"), "README shows readme.ts as it is");
  // tsc compiled it to dist/readme.js; run that against a server of our own
  // (beside it, so its imports resolve from this package).
  const compiled = readFileSync("dist/readme.js", "utf8").replace("http://localhost:3000", openUrl);
  writeFileSync("dist/readme.run.mjs", compiled);
  const logged: unknown[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => void logged.push(...args);
  try {
    await import(path.resolve("dist/readme.run.mjs"));
  } finally {
    console.log = log;
  }
  assert.deepEqual(logged, ["hello from TypeScript"]);
});

test("pages through a listing at one revision, then deletes the prefix", async () => {
  const kv = connect(url, token);
  const ops = Array.from({ length: 25 }, (_, n) => ({
    method: "PUT" as const,
    key: `user/${String(n).padStart(2, "0")}`,
    value: String(n),
  }));
  const loaded = await kv.POST("/batch", { body: ops });
  assert.equal(loaded.response.status, 200);
  const written = loaded.data?.[0].revision;

  const { keys, revision } = await listAll(kv, "user/", 10);
  assert.deepEqual(
    keys,
    ops.map((op) => op.key),
  );
  assert.equal(revision, written, "the batch's one revision");

  assert.equal(await deletePrefix(kv, "user/"), 25);
  assert.deepEqual((await listAll(kv, "user/")).keys, []);
});

test("a guarded update runs one branch", async () => {
  const kv = connect(url, token);
  const created = await kv.PUT("/store/{key}", {
    params: { path: { key: "mode" } },
    body: "slow",
    bodySerializer: (body) => body,
  });
  assert.equal(created.response.status, 201);
  const revision = Number(created.response.headers.get("etag")?.replaceAll('"', ""));
  const guarded = {
    guards: [{ key: "mode", compare: "EQUAL" as const, mod_revision: revision }],
    then: [{ op: "PUT" as const, key: "mode", value: "fast" }],
    else: [{ op: "GET" as const, key: "mode" }],
  };
  const first = await kv.POST("/txn", { body: guarded });
  assert.equal(first.data?.succeeded, true);
  assert.equal(first.data?.results[0].status, 204);
  // The same guard again: `mode` moved on, so the else branch reads it.
  const second = await kv.POST("/txn", { body: guarded });
  assert.equal(second.data?.succeeded, false);
  assert.equal(second.data?.results[0].value, "fast");
  assert.equal(second.data?.results[0].version, 2);
});

test("a service registers keys under one lease", async () => {
  const kv = connect(url, token);
  const granted = await kv.POST("/leases", { body: { ttl: 30 } });
  assert.equal(granted.response.status, 201);
  const id = granted.data?.id ?? "";
  for (const key of ["svc/ts/1", "svc/ts/1/health"]) {
    const put = await kv.PUT("/store/{key}", {
      params: { path: { key }, query: { lease: id } },
      body: "up",
      bodySerializer: (body) => body,
    });
    assert.equal(put.response.status, 201);
  }
  const kept = await kv.POST("/leases/{id}/keepalive", { params: { path: { id } } });
  assert.equal(kept.data?.ttl, 30);
  const read = await kv.GET("/leases/{id}", { params: { path: { id }, query: { keys: true } } });
  assert.deepEqual(read.data?.keys, ["svc/ts/1", "svc/ts/1/health"]);
  const revoked = await kv.DELETE("/leases/{id}", { params: { path: { id } } });
  assert.equal(revoked.response.status, 200);
});

test("a lock's token fences a write, and nothing once released", async () => {
  const kv = connect(url, token);
  const held = await kv.POST("/locks/{name}", {
    params: { path: { name: "reports" } },
    body: { ttl: 30 },
  });
  assert.equal(held.response.status, 200);
  const fence = `reports=${held.data?.token}`;
  const put = (value: string) =>
    kv.PUT("/store/{key}", {
      params: { path: { key: "report" }, header: { "If-Fence": fence } },
      body: value,
      bodySerializer: (body) => body,
    });
  assert.equal((await put("v1")).response.status, 201);
  const released = await kv.DELETE("/locks/{name}", {
    params: { path: { name: "reports" }, query: { token: held.data?.token ?? 0 } },
  });
  assert.equal(released.response.status, 204);
  const stale = await put("v2");
  assert.equal(stale.response.status, 412);
  assert.equal(stale.error?.type, "urn:kv-store:problem:fence-lost");
});
