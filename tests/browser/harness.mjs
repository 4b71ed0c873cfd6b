// What the browser tests share: a kv-store server on a real socket, headless
// Chromium, and a TCP proxy that can cut and hold connections.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Starts the server binary (KV_STORE_BIN, default target/debug/kv-store) on
 * an ephemeral port, with `flags`; resolves once it logs its address. */
export function startServer(flags = []) {
  const binary = process.env.KV_STORE_BIN ?? path.join(root, "target/debug/kv-store");
  const child = spawn(binary, ["--listen", "127.0.0.1:0", "--rate-limit", "0", ...flags], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let log = "";
    const onData = (chunk) => {
      log += chunk;
      const match = /listening on (https?:\/\/[0-9.:]+)/.exec(log);
      if (match) {
        child.stdout.off("data", onData);
        child.stdout.resume(); // keep draining the log
        resolve({ url: match[1], stop: () => child.kill("SIGTERM") });
      }
    };
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", onData);
    child.on("exit", (code) => reject(new Error(`server exited (${code}) before listening:\n${log}`)));
    child.on("error", reject);
  });
}

/** Debian's Chromium, headless, with a fresh profile and nothing that reaches
 * for the (closed) outside network; `env` adds to its environment (a HOME
 * whose NSS database trusts a test CA, say). */
export async function launchBrowser(env = {}) {
  const profile = mkdtempSync(path.join(tmpdir(), "kv-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    env: { ...process.env, ...env },
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A TCP proxy in front of `target` ("host:port"). `cut()` ends every open
 * connection; while `hold()` is on, new connections wait unforwarded, and
 * `nextConnection()` resolves with the first bytes of the next one (the
 * request head), so a test can await a reconnect instead of sleeping. */
export async function startProxy(target) {
  const [host, port] = target.split(":");
  const open = new Set();
  const held = [];
  const waiters = [];
  let holding = false;

  const forward = (client, head) => {
    const upstream = net.connect(Number(port), host, () => {
      upstream.write(head);
      client.pipe(upstream).pipe(client);
      client.resume();
    });
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on("close", () => open.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
  };

  const server = net.createServer((client) => {
    client.once("data", (head) => {
      client.pause();
      const waiter = waiters.shift();
      if (waiter) waiter(head.toString("latin1"));
      if (holding) held.push([client, head]);
      else forward(client, head);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut: () => {
      for (const socket of open) socket.destroy();
    },
    hold: () => {
      holding = true;
    },
    release: () => {
      holding = false;
      for (const [client, head] of held.splice(0)) forward(client, head);
    },
    nextConnection: () => new Promise((resolve) => waiters.push(resolve)),
    close: () => {
      for (const socket of open) socket.destroy();
      for (const [client] of held) client.destroy();
      server.close();
    },
  };
}

/** Opens an operation in Swagger UI on `page`, presses "Try it out", lets
 * `fill` fill its parameters, executes it and returns the live response's
 * status and body element. */
export async function tryItOut(page, operationId, fill) {
  const block = page.locator(`.opblock[id$="-${operationId}"]`);
  await block.locator(".opblock-summary").first().click();
  await block.locator(".try-out__btn").click();
  await fill(block);
  await block.locator(".execute").click();
  const response = block.locator(".live-responses-table .response").first();
  await response.waitFor();
  return {
    status: (await response.locator(".response-col_status").innerText()).trim(),
    body: block.locator(".live-responses-table .response-col_description pre").first(),
  };
}
