// Drives the dashboard's tasks list and task view in headless Chromium for tests/dashboard.rs.
// Usage: node tasks.mjs <base url> <member token> <target dir> <ids json>
// ids: {reviewer, writer, done, failed, running, queued} (agents, and tasks oldest first).
// Each `ask(STEP)` prints STEP and waits for the test to do it and answer on stdin; the script
// prints DONE and exits 0 when every check passed. Every wait polls a condition (no sleeps).
import { launch, ask, endSteps } from "./lib.mjs";

const [base, token, target, idsJson] = process.argv.slice(2);
const ids = JSON.parse(idsJson);
const T = { timeout: 20000 };

const browser = await launch();
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e));
  // Transcript sockets go through a route (forwarded to the server) so that one can be dropped.
  const txSockets = [];
  let socketArrived = () => {};
  await page.routeWebSocket(/\/messages\/ws/, (ws) => { ws.connectToServer(); txSockets.push(ws); socketArrived(); });
  const nextSocket = (n) => txSockets.length >= n ? Promise.resolve() : new Promise((resolve) => { socketArrived = () => { if (txSockets.length >= n) resolve(); }; });

  const until = async (what, fn, arg) => {
    try { await page.waitForFunction(fn, arg, T); } catch (e) {
      const rows = await page.evaluate(() => [...document.querySelectorAll("#tasks tr")].map((r) => r.dataset.task + " " + r.textContent).join("\n")).catch(() => "?");
      throw new Error(`timed out waiting for: ${what}\nlocation: ${page.url()}\ntask rows:\n${rows}\n${e.message}`);
    }
  };
  const check = (cond, what) => { if (!cond) throw new Error("check failed: " + what); };
  const rowsAre = (want, what) => until(what, (want) => JSON.stringify([...document.querySelectorAll("#tasks tr[data-task]")].map((r) => r.dataset.task)) === JSON.stringify(want), want);
  const text = (sel) => page.$eval(sel, (el) => el.textContent);

  await page.goto(base + "/");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#conn.live", T);
  await page.evaluate(() => { window.__sameDocument = true; }); // a reload would lose it
  const noReload = async () => check(await page.evaluate(() => window.__sameDocument === true), "the page did not reload");

  // Overview: events name their agent and runtime.
  await until("a task.running event naming its agent and runtime", () => [...document.querySelectorAll("#events tr")].some((tr) =>
    tr.children[1].textContent === "task.running" && tr.children[2].textContent.includes("reviewer") && tr.children[2].textContent.includes("laptop")));
  await until("runtime.registered naming the runtime", () => [...document.querySelectorAll("#events tr")].some((tr) =>
    tr.children[1].textContent === "runtime.registered" && tr.children[2].textContent === "laptop"));

  // Tasks list: newest first, with the agent's and runtime's names.
  await page.click('nav a[data-nav="tasks"]');
  await rowsAre([ids.queued, ids.running, ids.failed, ids.done], "the tasks, newest first");
  const cells = await page.$$eval("#tasks tr[data-task]", (rs) => rs.map((r) => ({ id: r.dataset.task, agent: r.querySelector(".agent").textContent, runtime: r.querySelector(".runtime").textContent, status: r.dataset.status })));
  const agentOf = { [ids.queued]: "writer", [ids.running]: "reviewer", [ids.failed]: "writer", [ids.done]: "reviewer" };
  const statusOf = { [ids.queued]: "queued", [ids.running]: "running", [ids.failed]: "failed", [ids.done]: "completed" };
  for (const c of cells) {
    check(c.agent === agentOf[c.id], `row ${c.id} shows agent ${agentOf[c.id]}, not ${c.agent}`);
    check(c.runtime === "laptop", `row ${c.id} shows the runtime's name, not ${c.runtime}`);
    check(c.status === statusOf[c.id], `row ${c.id} is ${statusOf[c.id]}, not ${c.status}`);
  }
  const html = await page.$eval("#tasks", (el) => el.textContent);
  check(!html.includes(ids.reviewer) && !html.includes(ids.writer), "no agent UUID in the list");

  // Live: a task enqueued now appears on top; a cancellation updates its row in place.
  const live = await ask("LIST_READY");
  await rowsAre([live, ids.queued, ids.running, ids.failed, ids.done], "the new task on top, live");
  check(await text(`tr[data-task="${live}"] .agent`) === "reviewer", "the live row names its agent");
  check(await text(`tr[data-task="${live}"] .status`) === "queued", "the live row is queued");
  await ask("LIVE_SEEN");
  await until("the cancelled task's row updated in place", (id) => document.querySelector(`tr[data-task="${id}"]`)?.dataset.status === "cancelled", ids.queued);
  await rowsAre([live, ids.queued, ids.running, ids.failed, ids.done], "the order unchanged by the update");
  await noReload();

  // Filters narrow the list (and are kept in the URL).
  await page.selectOption("#f-status", "running");
  await rowsAre([ids.running], "status=running");
  check(page.url().includes("status=running"), "the filter is in the URL");
  await page.selectOption("#f-status", "");
  await page.selectOption("#f-agent", ids.writer);
  await rowsAre([ids.queued, ids.failed], "agent=writer");
  await page.selectOption("#f-status", "cancelled");
  await rowsAre([ids.queued], "agent=writer, status=cancelled");
  await page.selectOption("#f-agent", "");
  await page.selectOption("#f-status", "");
  await rowsAre([live, ids.queued, ids.running, ids.failed, ids.done], "no filter");
  await page.screenshot({ path: `${target}/dashboard-tasks.png`, fullPage: true, animations: "disabled" });

  // Task view: opened from its row, linkable by its URL.
  await page.click(`tr[data-task="${ids.running}"] td.agent`);
  await until("the task view's URL", (id) => location.hash === "#/tasks/" + id, ids.running);
  await page.waitForSelector("#view-task:not([hidden])", T);
  await until("the task loaded", () => document.querySelector("#task-status .status")?.textContent === "running");
  check(await text('dd[data-field="agent"]') === "reviewer", "the task view names its agent");
  check(await text('dd[data-field="attempt"]') === "1 of 1", "attempt of max_attempts");
  check(await text('dd[data-field="input_tokens"]') === "100", "usage: input tokens");
  check(await text('dd[data-field="output_tokens"]') === "50", "usage: output tokens");
  check(await text('dd[data-field="cost_usd"]') === "$0.0100", "usage: cost");
  check(await page.$$eval("#attempts tr[data-attempt]", (rs) => rs.length) === 1, "one attempt");
  check(await text('#attempts tr[data-attempt="1"] .runtime') === "laptop", "the attempt's runtime by name");
  check(await text('#attempts tr[data-attempt="1"] .outcome') === "open", "the attempt is open");
  check(await text('#attempts tr[data-attempt="1"] .usage') === "100 in · 50 out · $0.0100", "the attempt's usage");
  check((await text("#task-payload")).includes('"from": "dashboard test"'), "the payload");

  // Its transcript, in order, each kind styled apart, the tool call collapsed until clicked.
  const seqs = () => page.$$eval("#transcript .msg", (ms) => ms.map((m) => Number(m.dataset.seq)));
  await until("the stored transcript", () => document.querySelectorAll("#transcript .msg").length === 4);
  check(JSON.stringify(await seqs()) === "[0,1,2,3]", "messages in seq order");
  const kinds = await page.$$eval("#transcript .msg", (ms) => ms.map((m) => m.className));
  check(JSON.stringify(kinds) === JSON.stringify(["msg msg-text", "msg msg-tool_use", "msg msg-tool_result", "msg msg-stderr"]), "a class per kind: " + kinds);
  check(await page.$$eval("#transcript .attempt-head", (hs) => hs.map((x) => x.textContent).join()) === "Attempt 1", "one attempt header");
  await until("live", () => document.getElementById("tx-state").textContent === "live");
  const tool = '#transcript .msg[data-seq="1"] details';
  check(await text(`${tool} summary .tool-name`) === "Read", "the tool call shows its name");
  check(!(await page.$eval(tool, (d) => d.open)) && !(await page.isVisible(`${tool} pre`)), "the tool call starts collapsed");
  check(!(await page.$eval('#transcript .msg[data-seq="2"] details', (d) => d.open)), "the tool result starts collapsed");
  await page.click(`${tool} summary`);
  await page.waitForSelector(`${tool} pre`, { state: "visible", ...T });
  check((await text(`${tool} pre`)).includes('"path": "a.rs"'), "the expanded tool call shows its input");

  // A message posted now appears live.
  await ask("TRANSCRIPT_SHOWN");
  await until("the live message", () => document.querySelector('#transcript .msg[data-seq="4"]')?.textContent.includes("live message"));
  check(await page.$$eval("#transcript img", (imgs) => imgs.length) === 0 && (await text('#transcript .msg[data-seq="4"] .content')).includes("<img src=x"), "markup in a message is shown as text");

  // A socket dropped without `end` reconnects after the last message received, with no repeats.
  check(txSockets.length === 1, "one transcript socket so far");
  await txSockets[0].close({ code: 4000, reason: "dropped by the test" });
  await nextSocket(2);
  check(txSockets[1].url().includes("cursor=1:4"), "reconnected with cursor=1:4: " + txSockets[1].url());
  await until("live again", () => document.getElementById("tx-state").textContent === "live");
  await ask("RECONNECTED");
  await until("the message after the reconnection", () => document.querySelector('#transcript .msg[data-seq="5"]'));
  check(JSON.stringify(await seqs()) === "[0,1,2,3,4,5]", "no message lost or repeated");

  // Auto-scroll follows new messages, stops while the reader is scrolled up, resumes at the bottom.
  const atBottom = () => { const b = document.getElementById("transcript"); return b.scrollHeight > b.clientHeight && b.scrollHeight - b.scrollTop - b.clientHeight < 2; };
  const frames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await ask("FLOOD");
  await until("the flood", () => document.querySelector('#transcript .msg[data-seq="69"]'));
  await until("scrolled to the newest message", atBottom);
  await page.$eval("#transcript", (b) => { b.scrollTop = 0; });
  await page.waitForSelector("#tx-jump", { state: "visible", ...T });
  await ask("SCROLLED_UP");
  await until("more messages", () => document.querySelector('#transcript .msg[data-seq="89"]'));
  await frames();
  check(await page.$eval("#transcript", (b) => b.scrollTop) === 0, "the reader's position kept while scrolled up");
  await page.$eval("#transcript", (b) => { b.scrollTop = b.scrollHeight; });
  await page.waitForSelector("#tx-jump", { state: "hidden", ...T });
  await ask("AT_BOTTOM");
  await until("one more message", () => document.querySelector('#transcript .msg[data-seq="90"]'));
  await until("following again", atBottom);

  // Every kind has its class and its own look.
  const looks = await page.evaluate(() => Object.fromEntries(["text", "thinking", "stdout", "stderr", "error", "system"].map((k) => {
    const c = document.querySelector(`#transcript .msg-${k} .content`);
    const s = c && getComputedStyle(c);
    return [k, s ? [s.color, s.fontStyle, s.fontFamily, s.fontWeight, s.fontSize].join("|") : null];
  })));
  check(Object.values(looks).every(Boolean), "a message of every kind: " + JSON.stringify(looks));
  check(new Set(Object.values(looks)).size === 6, "each kind styled apart: " + JSON.stringify(looks));

  // Completion: the view shows the end, the final status, usage and result.
  await ask("COMPLETE");
  await until("ended", () => document.getElementById("tx-state").textContent === "ended: completed");
  await until("the task completed", () => document.querySelector("#task-status .status")?.textContent === "completed");
  await until("the final usage", () => document.querySelector('dd[data-field="input_tokens"]')?.textContent === "200");
  check(await text('#attempts tr[data-attempt="1"] .outcome') === "completed", "the attempt's outcome");
  check((await text("#task-result")).includes('"summary": "done"'), "the result");
  await page.$eval("#transcript", (b) => { b.scrollTop = 0; });
  await page.screenshot({ path: `${target}/dashboard-task.png`, fullPage: true, animations: "disabled" });

  // The view's URL opens it in another tab: the whole transcript, then the end at once.
  const other = await context.newPage();
  other.on("pageerror", (e) => pageErrors.push(e));
  await other.goto(`${base}/#/tasks/${ids.running}`);
  await other.waitForFunction(() => document.querySelectorAll("#transcript .msg").length === 91 && document.getElementById("tx-state").textContent === "ended: completed", null, T);
  check(await other.$eval('dd[data-field="status"]', (d) => d.textContent) === "completed", "the linked view shows the task");

  check(txSockets.length === 2, "no reconnection after end");
  await noReload();
  if (pageErrors.length) throw new Error("errors in the page: " + pageErrors.join("; "));
  console.log("DONE");
} catch (e) {
  if (page) await page.screenshot({ path: `${target}/dashboard-failure.png`, fullPage: true }).catch(() => {});
  throw e;
} finally {
  endSteps();
  await browser.close();
}
