// Drives the dashboard in headless Chromium for tests/dashboard.rs.
// Usage: node dashboard.mjs <base url> <member token> <screenshot path>
// Prints READY once the page shows the workspace live over the WebSocket, then waits for a
// task.queued event and a queue depth of 1 to appear without a reload, prints SEEN, and exits 0.
import { launch } from "./lib.mjs";

const [base, token, shot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage();
  let reloads = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) reloads++; });
  await page.goto(base + "/");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#conn.live", { timeout: 10000 });
  await page.waitForSelector("tr[data-runtime]", { timeout: 10000 });
  await page.waitForSelector("tr[data-agent]", { timeout: 10000 });
  const navigationsBefore = reloads;
  console.log("READY");
  await page.waitForFunction(() => [...document.querySelectorAll("#events td")].some((td) => td.textContent === "task.queued"), null, { timeout: 10000 });
  await page.waitForFunction(() => document.querySelector("tr[data-agent] td.depth")?.textContent === "1", null, { timeout: 10000 });
  if (reloads !== navigationsBefore) throw new Error("the page reloaded");
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  console.log("SEEN");
} finally {
  await browser.close();
}
