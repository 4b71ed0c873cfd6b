// Swagger UI over HTTPS with access control: a test CA (openssl) that the
// browser trusts (an NSS database, as Chromium on Linux reads it), a server
// with --tls-cert and --auth-file, and a token entered through Swagger UI's
// "Authorize" dialog before "Try it out".
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { launchBrowser, startServer, tryItOut } from "./harness.mjs";

const token = "kvs_browser-test-token";
let dir;
let server;
let browser;
let page;

/** A CA, and a certificate it signs for 127.0.0.1. */
function makeCertificates(at) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: at, stdio: "ignore" });
  openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key");
  openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=kv-store browser test CA");
  openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key");
  openssl("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
  writeFileSync(path.join(at, "server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext");
}

/** A home whose NSS database trusts the test CA: Chromium on Linux reads
 * ~/.pki/nssdb (certutil from Debian's libnss3-tools). */
function trustingHome(at) {
  const home = path.join(at, "home");
  const db = path.join(home, ".pki", "nssdb");
  mkdirSync(db, { recursive: true });
  execFileSync("certutil", ["-d", `sql:${db}`, "-N", "--empty-password"]);
  execFileSync("certutil", ["-d", `sql:${db}`, "-A", "-t", "C,,", "-n", "kv-store test CA", "-i", path.join(at, "ca.pem")]);
  return home;
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "kv-https-"));
  makeCertificates(dir);
  const digest = createHash("sha256").update(token).digest("hex");
  writeFileSync(path.join(dir, "tokens.toml"), `[[token]]\nname = "browser"\nsha256 = "${digest}"\nwrite = [""]\n`);
  server = await startServer([
    "--tls-cert", path.join(dir, "server.pem"),
    "--tls-key", path.join(dir, "server.key"),
    "--auth-file", path.join(dir, "tokens.toml"),
  ]);
  assert.match(server.url, /^https:/);
  browser = await launchBrowser({ HOME: trustingHome(dir) });
  page = await browser.context.newPage();
});

after(async () => {
  await browser?.close();
  server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("over HTTPS, a token entered in Authorize lets Try it out write and read", async () => {
  await page.goto(`${server.url}/docs`);
  await page.locator(".opblock").first().waitFor();

  await page.locator(".auth-wrapper .authorize").click();
  const dialog = page.locator(".modal-ux");
  await dialog.locator("input").first().fill(token);
  await dialog.locator(".auth-btn-wrapper .authorize").click();
  await dialog.locator(".btn-done, .close-modal").first().click();

  const put = await tryItOut(page, "put_key", async (block) => {
    await block.locator('tr[data-param-name="key"] input').fill("https-key");
    // The value is text/plain: a text box, typed into as a user would.
    await block.locator(".body-param textarea").fill("over TLS, with a token");
  });
  assert.equal(put.status, "201");
  const get = await tryItOut(page, "get_key", async (block) => {
    await block.locator('tr[data-param-name="key"] input').fill("https-key");
  });
  assert.equal(get.status, "200");
  assert.equal((await get.body.innerText()).trim(), "over TLS, with a token");
});
