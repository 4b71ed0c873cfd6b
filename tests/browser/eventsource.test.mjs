// A browser's EventSource on /watch_key/{key}: it receives put events, and
// when the stream is cut it reconnects with Last-Event-ID and gets exactly
// the events it missed, none twice.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, startProxy, startServer } from "./harness.mjs";

let server;
let proxy;
let browser;

before(async () => {
  server = await startServer();
  proxy = await startProxy(new URL(server.url).host);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  proxy?.close();
  server?.stop();
});

const put = async (key, value) => {
  const response = await fetch(`${server.url}/store/${key}`, { method: "PUT", body: value });
  assert.ok(response.ok, `PUT ${key}: ${response.status}`);
};

test("EventSource resumes after the stream is cut without losing an event", async () => {
  const page = await browser.context.newPage();
  // The page comes through the proxy too, so the EventSource is same-origin.
  await page.goto(`${proxy.url}/healthz`);
  await page.evaluate(() => {
    window.received = [];
    window.opens = 0;
    const source = new EventSource("/watch_key/browser-key");
    source.onopen = () => window.opens++;
    source.addEventListener("put", (event) =>
      window.received.push({ id: event.lastEventId, value: JSON.parse(event.data).value }),
    );
  });
  await page.waitForFunction(() => window.opens === 1);

  await put("browser-key", "v1");
  await put("browser-key", "v2");
  await page.waitForFunction(() => window.received.length === 2);
  const lastSeen = await page.evaluate(() => window.received[1].id);

  // Cut the stream and hold the reconnect while two more writes happen.
  proxy.hold();
  const reconnect = proxy.nextConnection();
  proxy.cut();
  await put("browser-key", "v3");
  await put("browser-key", "v4");
  const head = await reconnect;
  assert.match(head, /^GET \/watch_key\/browser-key /);
  assert.match(head, new RegExp(`\\r\\nlast-event-id: ${lastSeen}\\r\\n`, "i"));
  proxy.release();

  await page.waitForFunction(() => window.received.length >= 4 && window.opens === 2);
  const received = await page.evaluate(() => window.received);
  assert.deepEqual(
    received.map((event) => event.value),
    ["v1", "v2", "v3", "v4"],
  );
  const ids = received.map((event) => Number(event.id));
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  assert.equal(new Set(ids).size, 4);
});
