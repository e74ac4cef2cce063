// Shared by the storefront's browser tests: Playwright driving Debian's Chromium
// (headless) against the suite the Rust test started (BASE_URL). Every page checked with
// axe-core (no serious or critical violation), any console error a failure, a screenshot
// per step in SCREENSHOTS. Needs TOOLS: a directory with playwright-core and
// @axe-core/playwright.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const require = createRequire(`${process.env.TOOLS}/`);
const { chromium } = require("playwright-core");
const { default: AxeBuilder } = require("@axe-core/playwright");

export const BASE = process.env.BASE_URL;
export const SHOTS = process.env.SCREENSHOTS;
mkdirSync(SHOTS, { recursive: true });

export const problems = [];
export const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
  ],
});
let step = 0;
export async function shot(page, name) {
  step += 1;
  await page.screenshot({ path: `${SHOTS}/${String(step).padStart(2, "0")}-${name}.png`, fullPage: true });
}
export async function axe(page, name) {
  // Nothing a program meant for itself reaches the screen.
  const text = await page.locator("body").innerText();
  for (const leak of ["undefined", "NaN", "[object Object]", '{"', "Error:"]) {
    if (text.includes(leak)) problems.push(`"${leak}" on screen on ${name}: ${text.slice(0, 300)}`);
  }
  const results = await new AxeBuilder({ page }).analyze();
  for (const v of results.violations) {
    if (v.impact === "serious" || v.impact === "critical") {
      problems.push(`axe on ${name}: ${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    }
  }
}
// Refusals a test provokes on purpose: the browser logs the API's 4xx answer to the
// console ("Failed to load resource"), which is then not a fault of the page.
let expectedRefusals = 0;

/** Runs `action`, which makes the API refuse one request on purpose. */
export async function refusedOnce(action) {
  expectedRefusals += 1;
  await action();
}

/** Records the page's console errors and uncaught exceptions as problems. */
export function watchConsole(page) {
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (expectedRefusals > 0 && /status of 4\d\d/.test(m.text())) {
      expectedRefusals -= 1;
      return;
    }
    problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
}

/** A fresh browser session with a newly registered, signed-in customer. */
export async function shopper(email) {
  const context = await browser.newContext({ locale: "es-CL" });
  const page = await context.newPage();
  watchConsole(page);
  await page.goto(`${BASE}/ingresar`);
  await page.locator("#f-register-email").fill(email);
  await page.locator("#f-register-password").fill("correct horse battery staple");
  await page.getByRole("button", { name: "Crear cuenta" }).click();
  await page.getByRole("heading", { name: "Mis pedidos" }).waitFor();
  return { context, page };
}

export async function addToCart(page, sku) {
  await page.goto(`${BASE}/producto/${sku}`);
  await page.getByRole("button", { name: "Agregar al carro" }).waitFor();
  await axe(page, `producto ${sku}`);
  await page.getByRole("button", { name: "Agregar al carro" }).click();
  await page.getByText("Agregado al carro.").waitFor();
}

/** A JSON API call from the test itself (a customer's side of the story, or set-up). */
export async function call(method, path, body, token, headers = {}) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

export const PASSWORD = "correct horse battery staple";

/** A browser session signed in at /admin as the suite's admin, on the dashboard. */
export async function adminSession() {
  const context = await browser.newContext({ locale: "es-CL", acceptDownloads: true });
  const page = await context.newPage();
  watchConsole(page);
  page.on("dialog", (d) => void d.accept());
  await page.goto(`${BASE}/admin`);
  await page.getByRole("heading", { name: "Administración" }).waitFor();
  await axe(page, "admin ingresar");
  await shot(page, "admin-ingresar");
  await page.getByLabel("Correo").fill("admin@tienda.cl");
  await page.getByLabel("Contraseña").fill(PASSWORD);
  await page.getByRole("button", { name: "Ingresar" }).click();
  await page.getByRole("heading", { name: "Resumen", exact: true }).waitFor();
  return { context, page };
}

/** A customer registered and signed in through the API: their access token. */
export async function apiCustomer(email) {
  await call("POST", "/v1/auth/register", { email, password: PASSWORD });
  return (await call("POST", "/v1/auth/login", { email, password: PASSWORD })).body.accessToken;
}

/** Places and pays (the sandbox's approving card) an order of `quantity` × `sku`. */
export async function apiPurchase(token, sku, quantity) {
  const placed = await call("POST", "/v1/orders", { lines: [{ sku, quantity }] }, token);
  expect(placed.status === 200, `placing: ${JSON.stringify(placed.body)}`);
  const paid = await call(
    "POST",
    `/v1/orders/${placed.body.id}/payments`,
    { card: { number: "4242424242424242", expMonth: 12, expYear: 2030, cvc: "123", holder: "Compradora" } },
    token,
    { "idempotency-key": crypto.randomUUID() },
  );
  expect(paid.status === 200 && paid.body.status === "captured", `paying: ${JSON.stringify(paid.body)}`);
  return placed.body;
}

export function expect(condition, message) {
  if (!condition) throw new Error(message);
}


/** Runs `journey`, then reports: exit 1 with every problem, or "OK". */
export async function run(journey) {
  try {
    await journey();
  } catch (e) {
    problems.push(`${e.stack ?? e}`);
    for (const context of browser.contexts()) {
      for (const page of context.pages()) await shot(page, "fallo").catch(() => {});
    }
  } finally {
    await browser.close();
  }
  if (problems.length) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
  console.log("OK");
}
