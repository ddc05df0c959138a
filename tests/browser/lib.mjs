// Shared by the browser scripts that tests/dashboard.rs runs.
import readline from "node:readline";
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// The step protocol with the Rust side: `ask(name)` prints the step name on stdout and resolves
// with the next line the test writes to stdin (once it has done what the step needs).
// `endSteps()` lets the process exit (an open stdin would keep it alive).
let rl = null, lines = null;
export async function ask(step) {
  if (!rl) { rl = readline.createInterface({ input: process.stdin }); lines = rl[Symbol.asyncIterator](); }
  console.log(step);
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting for the test to do ${step}`);
  return value;
}
export function endSteps() { rl?.close(); }
