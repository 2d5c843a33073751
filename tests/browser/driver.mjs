// driver.mjs - Debian's Chromium, driven with playwright-core, one command a line.
//
//   node tests/browser/driver.mjs
//
// Reads JSON commands on stdin, {"id": 1, "op": "goto", "args": {...}}, and
// answers each on stdout with {"id": 1, "ok": true, "result": ...} or
// {"id": 1, "ok": false, "error": "..."}.  tests/browser/browser.py is the
// Python side; the pytest files there drive the page through it while the
// staff side talks Matrix.
//
// Everything the page does that a test should fail on is recorded and
// returned by the "problems" op: uncaught errors, console errors (a Content
// Security Policy refusal is one), and any request to another origin.
//
// Environment: CHROMIUM (default /usr/bin/chromium).
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

// As root in a sandbox with no network but loopback: no sandbox, no GPU, and
// none of Chromium's background connections.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage'];

let browser = null;
let context = null;
let page = null;
let origin = null;
const problems = [];

function note(kind, text) { problems.push({ kind, text: String(text).slice(0, 500) }); }

// Every request the page made ("POST /_threshold/gateway/v1/upload"), in order.
const sent = [];

function watch(p) {
  p.on('pageerror', (e) => note('pageerror', e.message));
  p.on('console', (m) => { if (m.type() === 'error') note('console', m.text()); });
  p.on('request', (r) => {
    // Top-level navigations are the test's own (or Quick exit's): not the page fetching.
    if (r.isNavigationRequest() && r.frame() === p.mainFrame()) return;
    const u = new URL(r.url());
    if (!['http:', 'https:'].includes(u.protocol)) return;
    sent.push(r.method() + ' ' + u.pathname);
    if (origin && u.origin !== origin) {
      note('third-party', r.url());
    }
  });
}

const ops = {
  async launch({ width = 360, height = 640, locale = 'en-GB', scheme = 'light', args = [] }) {
    // args: more flags (the call tests' fake microphone and camera)
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: FLAGS.concat(args),
    });
    context = await browser.newContext({
      viewport: { width, height }, locale, reducedMotion: 'reduce', colorScheme: scheme,
    });
    page = await context.newPage();
    watch(page);
    return true;
  },
  // A browser with a profile on disk (history, favicons, sessions, storage),
  // as a phone's browser keeps one: what a test can search afterwards.
  async launch_persistent({ dir, width = 360, height = 640, locale = 'en-GB' }) {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: FLAGS,
      viewport: { width, height }, locale, reducedMotion: 'reduce',
    });
    browser = context;
    page = context.pages()[0] || await context.newPage();
    watch(page);
    return true;
  },
  // Requests to URLs matching the glob fail as on a dead network.
  async block({ pattern }) { await page.route(pattern, (r) => r.abort('internetdisconnected')); return true; },
  async offline({ on = true }) { await context.setOffline(on); return true; },
  async viewport({ width, height }) { await page.setViewportSize({ width, height }); return true; },
  async goto({ url }) {
    const u = new URL(url);
    if (!origin && u.protocol.startsWith('http')) origin = u.origin;
    await page.goto(url, { waitUntil: 'load' });
    return page.url();
  },
  async set_origin({ url }) { origin = new URL(url).origin; return true; },
  async url() { return page.url(); },
  async requests() { return sent; },
  async reload() { await page.reload({ waitUntil: 'load' }); return page.url(); },
  async back() { await page.goBack({ waitUntil: 'load' }).catch(() => null); return page.url(); },
  async click({ selector, timeout = 15000 }) { await page.click(selector, { timeout }); return true; },
  async fill({ selector, value, timeout = 15000 }) { await page.fill(selector, value, { timeout }); return true; },
  async press({ key, times = 1, delay = 0 }) {
    for (let i = 0; i < times; i++) {
      await page.keyboard.press(key);
      if (delay) await page.waitForTimeout(delay);
    }
    return true;
  },
  // Choose files in an <input type=file>, as the file picker would: [{name, mime, b64}].
  async files({ selector, files = [], timeout = 15000 }) {
    await page.setInputFiles(selector, files.map((f) => ({
      name: f.name, mimeType: f.mime, buffer: Buffer.from(f.b64, 'base64'),
    })), { timeout });
    return true;
  },
  // Click what starts a download; the file's suggested name and bytes (base64).
  async click_download({ selector, timeout = 30000 }) {
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout }), page.click(selector, { timeout })]);
    const path = await dl.path();
    return { name: dl.suggestedFilename(), b64: readFileSync(path).toString('base64') };
  },
  async type({ text }) { await page.keyboard.type(text); return true; },
  async wait({ selector, state = 'visible', timeout = 30000 }) {
    await page.waitForSelector(selector, { state, timeout });
    return true;
  },
  // Wait until the expression, evaluated in the page, is truthy; returns its value.
  // (Polled from here: waitForFunction would eval() in the page, which the CSP forbids.)
  async wait_js({ expr, timeout = 30000 }) {
    const end = Date.now() + timeout;
    let last = null;
    for (;;) {
      try {
        last = await page.evaluate(expr);
        if (last) return last;
      } catch (e) {
        if (Date.now() > end) throw e; // a navigation can destroy the context: try again
      }
      if (Date.now() > end) throw new Error('timed out waiting for ' + expr + ' (last: ' + JSON.stringify(last) + ')');
      await new Promise((r) => setTimeout(r, 100));
    }
  },
  async eval({ expr }) { return page.evaluate(expr); },
  async text({ selector }) { return page.textContent(selector); },
  async screenshot({ path, full = true }) { await page.screenshot({ path, fullPage: full }); return path; },
  // axe-core on the page as it is now; violations at or above the impacts asked.
  async axe({ impacts = ['minor', 'moderate', 'serious', 'critical'] }) {
    await page.evaluate(AXE_SOURCE);
    const res = await page.evaluate(() => globalThis.axe.run(document, {
      resultTypes: ['violations'],
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
    }));
    return res.violations.filter((v) => impacts.includes(v.impact)).map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target, summary: n.failureSummary })),
    }));
  },
  async problems() { return problems.splice(0); },
  async close() {
    if (browser) await browser.close();
    browser = null;
    return true;
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let msg;
  try { msg = JSON.parse(line); } catch (e) { continue; }
  const reply = { id: msg.id };
  try {
    const fn = ops[msg.op];
    if (!fn) throw new Error('unknown op ' + msg.op);
    reply.ok = true;
    reply.result = (await fn(msg.args || {})) ?? null;
  } catch (e) {
    reply.ok = false;
    reply.error = String(e && e.stack || e).slice(0, 4000);
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
  if (msg.op === 'close') break;
}
if (browser) await browser.close();
process.exit(0);
