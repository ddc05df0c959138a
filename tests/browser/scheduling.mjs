// Drives the dashboard in headless Chromium for tests/dashboard.rs: scheduling state.
// Usage: node scheduling.mjs <base url> <member token> <task id> <screenshot path>
// Prints READY once the overview is live; the test then pauses the agent and drains the runtime.
// Waits for the agent's "paused" and the runtime's "draining" badges to appear without a reload,
// then opens the queued tasks and the task, where it waits for the reason the task is waiting to
// be shown; prints SEEN and exits 0.
import { launch } from "./lib.mjs";

const [base, token, taskId, shot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(base + "/");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#conn.live", { timeout: 10000 });
  await page.waitForSelector("tr[data-agent]", { timeout: 10000 });
  console.log("READY");
  await page.waitForFunction(() => document.querySelector("tr[data-agent] td.agent-status")?.textContent.includes("paused"), null, { timeout: 10000 });
  await page.waitForFunction(() => document.querySelector("tr[data-runtime] td.rt-status")?.textContent.includes("draining"), null, { timeout: 10000 });
  await page.goto(base + "/#/tasks?status=queued");
  await page.waitForFunction((id) => document.querySelector(`tr[data-task="${id}"] .blocked`)?.textContent === "agent paused", taskId, { timeout: 10000 });
  await page.goto(base + "/#/tasks/" + taskId);
  await page.waitForFunction(() => document.querySelector("#task-fields dd[data-field=blocked]")?.textContent === "agent paused", null, { timeout: 10000 });
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  console.log("SEEN");
} finally {
  await browser.close();
}
