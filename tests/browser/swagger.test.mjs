// Swagger UI at /docs in a real browser: every operation renders, and
// "Try it out" writes a key and reads it back.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, startServer, tryItOut } from "./harness.mjs";

let server;
let browser;
let page;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.context.newPage();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

test("/docs renders every operation in the spec", async () => {
  const spec = await (await fetch(`${server.url}/openapi.json`)).json();
  const expected = Object.values(spec.paths)
    .flatMap((item) => Object.values(item).map((op) => op.operationId))
    .sort();

  await page.goto(`${server.url}/docs`);
  await page.locator(".opblock").first().waitFor();
  const rendered = await page
    .locator(".opblock")
    .evaluateAll((blocks) => blocks.map((b) => b.id.split("-").slice(2).join("-")));
  assert.deepEqual(rendered.sort(), expected);
  assert.equal(await page.locator(".title").first().innerText().then((t) => t.startsWith("kv-store")), true);

  if (process.env.KV_SCREENSHOT) {
    await page.screenshot({ path: process.env.KV_SCREENSHOT, fullPage: true });
  }
});

test('"Try it out": PUT a value, then GET shows it', async () => {
  await page.goto(`${server.url}/docs`);
  await page.locator(".opblock").first().waitFor();

  const put = await tryItOut(page, "put_key", async (block) => {
    await block.locator('tr[data-param-name="key"] input').fill("swagger-key");
    // The value is text/plain: a text box, typed into as a user would.
    await block.locator(".body-param textarea").fill("hello from Swagger UI");
  });
  assert.equal(put.status, "201");

  const get = await tryItOut(page, "get_key", async (block) => {
    await block.locator('tr[data-param-name="key"] input').fill("swagger-key");
  });
  assert.equal(get.status, "200");
  assert.equal((await get.body.innerText()).trim(), "hello from Swagger UI");

  // What the UI showed is what the server holds.
  const direct = await fetch(`${server.url}/store/swagger-key`);
  assert.equal(await direct.text(), "hello from Swagger UI");
});
