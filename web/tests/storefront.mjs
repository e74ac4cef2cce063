// The storefront with Webpay (what `orderflow all` runs): a new customer registers,
// searches, fills the cart, pays a boleta on Webpay's page and follows the order to the
// SII's acceptance, downloads the documents, signs out; then a rejected card, a factura,
// and two tabs racing for the last unit. Helpers and checks: ./browser.mjs.
import { BASE, SHOTS, addToCart, axe, browser, expect, problems, run, shopper, shot, watchConsole } from "./browser.mjs";

await run(async () => {
  const context = await browser.newContext({ locale: "es-CL", viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  watchConsole(page);

  // The first visit: what the browser transferred, compressed or not, stays small.
  await page.goto(`${BASE}/`);
  await page.getByRole("heading", { name: "Catálogo" }).waitFor();
  const transferred = await page.evaluate(() =>
    performance
      .getEntriesByType("resource")
      .concat(performance.getEntriesByType("navigation"))
      .reduce((sum, e) => sum + (e.transferSize || 0), 0),
  );
  expect(transferred > 0 && transferred < 200 * 1024, `the first visit transferred ${transferred} bytes`);
  await axe(page, "catálogo");
  await shot(page, "catalogo");

  // A new customer registers.
  await page.getByRole("link", { name: "Ingresar" }).click();
  await page.getByRole("heading", { name: "Crear cuenta" }).waitFor();
  await page.locator("#f-register-email").fill("ana.browser@example.cl");
  await page.locator("#f-register-password").fill("corta");
  await page.getByRole("button", { name: "Crear cuenta" }).click();
  // Too short: the browser's own check or the server's message, next to the field.
  await page.locator("#f-register-password").fill("correct horse battery staple");
  await axe(page, "ingresar");
  await shot(page, "registro");
  await page.getByRole("button", { name: "Crear cuenta" }).click();
  await page.getByRole("heading", { name: "Mis pedidos" }).waitFor();
  await shot(page, "registrada");

  // Searches "cafe" (no accent) and finds "Café".
  await page.getByRole("link", { name: "Catálogo" }).click();
  await page.getByRole("searchbox", { name: "Buscar" }).fill("cafe");
  await page.getByLabel("Categoría").selectOption("bebidas");
  await page.getByRole("button", { name: "Buscar" }).click();
  await page.getByRole("heading", { name: "Resultados para «cafe»" }).waitFor();
  const found = page.getByRole("link", { name: /Café/ });
  await found.first().waitFor();
  expect((await found.count()) >= 2, "searching cafe finds both cafés");
  await shot(page, "busqueda");
  await page.getByRole("button", { name: /Agregar al carro: Café/ }).first().click();
  await page.getByRole("button", { name: /Agregar al carro: Café/ }).nth(1).click();
  await page.getByRole("link", { name: "Carro (2)" }).waitFor();

  // The cart survives a reload, and so does the session (the refresh cookie).
  await page.reload();
  await page.getByRole("link", { name: "Carro (2)" }).waitFor();
  await page.getByRole("button", { name: "Salir" }).waitFor();
  const cookies = await context.cookies();
  const refresh = cookies.find((c) => c.name === "orderflow_refresh");
  expect(refresh && refresh.httpOnly && refresh.sameSite === "Strict" && refresh.path === "/v1/auth", "the refresh token is an HttpOnly, Strict cookie on /v1/auth");
  expect(!(await page.evaluate(() => document.cookie)).includes("orderflow_refresh"), "no script can read the refresh token");

  // Checkout: a boleta, paid on Webpay's page with the keyboard alone.
  await page.getByRole("link", { name: "Carro (2)" }).click();
  await page.getByRole("heading", { name: "Tu carro" }).waitFor();
  await axe(page, "carro");
  await shot(page, "carro");
  await page.getByRole("button", { name: "Ir a pagar" }).focus();
  await page.keyboard.press("Enter");
  await page.waitForURL(/webpayserver\/initTransaction/);
  await shot(page, "webpay");
  await page.getByLabel("Número de tarjeta").fill(process.env.CARD);
  await page.getByRole("button", { name: "Pagar" }).click();

  // Back at the shop: the order page says the payment was approved, and the order moves
  // on to its boleta accepted by the SII without a reload.
  await page.waitForURL(/\/pedidos\/[^/?]+\?pago=aprobado/);
  await page.getByText("Pago aprobado").waitFor();
  await page.getByText("aceptado por el SII").waitFor({ timeout: 30_000 });
  await page.getByText("boleta emitida").waitFor();
  // The status history, from the order's events.
  for (const step of ["pedido realizado", "pagado", "documento tributario emitido", "documento revisado por el SII"]) {
    await page.locator("#historial li", { hasText: step }).first().waitFor();
  }
  const total = await page.locator("#total").textContent();
  expect(/^\$[\d.]+$/.test(total ?? ""), `the total is CLP: ${total}`);
  await axe(page, "pedido");
  await shot(page, "pedido-aceptado");
  // The documents download.
  const pdf = page.waitForEvent("download");
  await page.getByRole("button", { name: "Descargar PDF" }).click();
  await (await pdf).saveAs(`${SHOTS}/boleta.pdf`);
  const xml = page.waitForEvent("download");
  await page.getByRole("button", { name: "Descargar XML" }).click();
  await (await xml).saveAs(`${SHOTS}/boleta.xml`);
  console.log(`TOTAL ${total}`);
  console.log(`ORDER ${page.url().split("/pedidos/")[1].split("?")[0]}`);

  // My orders lists it; signing out removes the cookie and My orders asks to sign in.
  await page.getByRole("link", { name: "Mis pedidos" }).click();
  await page.getByRole("link", { name: /Pedido del/ }).waitFor();
  await axe(page, "mis pedidos");
  await page.getByRole("button", { name: "Salir" }).click();
  await page.getByRole("link", { name: "Ingresar" }).waitFor();
  expect(!(await context.cookies()).some((c) => c.name === "orderflow_refresh" && c.value), "signing out removes the refresh cookie");
  await page.goto(`${BASE}/pedidos`);
  await page.getByRole("heading", { name: "Ingresa para continuar" }).waitFor();
  await shot(page, "salir");

  // 2. A rejected card: the reason in Spanish, the order cancelled, the stock back.
  {
    const { page } = await shopper("rechazo@example.cl");
    await addToCart(page, "TE-VERDE");
    await page.getByRole("link", { name: /Carro/ }).click();
    await page.getByRole("button", { name: "Ir a pagar" }).click();
    await page.waitForURL(/webpayserver\/initTransaction/);
    await page.getByLabel("Número de tarjeta").fill(process.env.REJECTED_CARD);
    await page.getByRole("button", { name: "Pagar" }).click();
    await page.waitForURL(/\?pago=rechazado/);
    await page.getByText("El pago fue rechazado por el banco emisor").waitFor();
    await page.locator("#estado", { hasText: "cancelado" }).waitFor({ timeout: 20_000 });
    await axe(page, "pedido rechazado");
    await shot(page, "rechazado");
    await page.goto(`${BASE}/producto/TE-VERDE`);
    await page.getByText("quedan 5").waitFor({ timeout: 20_000 });
    await shot(page, "stock-devuelto");
  }

  // 3. A factura: a wrong RUT is flagged as typed; a right one gets a factura.
  {
    const { page } = await shopper("factura@example.cl");
    await addToCart(page, "TE-VERDE");
    await page.getByRole("link", { name: /Carro/ }).click();
    await page.getByLabel("Factura (con RUT)").check();
    await page.getByLabel("RUT", { exact: true }).fill("76.369.187-1");
    await page.getByText("El RUT no es válido").waitFor();
    await page.getByLabel("Razón social").fill("Comercial Los Andes SpA");
    await page.getByLabel("Giro").fill("Venta de alimentos");
    await page.getByLabel("Dirección").fill("Av. Apoquindo 3000");
    await page.getByLabel("Comuna").fill("Las Condes");
    await page.getByRole("button", { name: "Ir a pagar" }).click();
    await page.getByText("El RUT no es válido").waitFor();
    await axe(page, "factura");
    await shot(page, "factura-rut-malo");
    expect(!page.url().includes("webpayserver"), "a wrong RUT never reaches payment");
    await page.getByLabel("RUT", { exact: true }).fill("76.369.187-K");
    expect((await page.getByText("El RUT no es válido").count()) === 0, "a right RUT clears the message");
    await page.getByRole("button", { name: "Ir a pagar" }).click();
    await page.waitForURL(/webpayserver\/initTransaction/);
    await page.getByLabel("Número de tarjeta").fill(process.env.CARD);
    await page.getByRole("button", { name: "Pagar" }).click();
    await page.waitForURL(/\?pago=aprobado/);
    await page.getByText("Factura electrónica").waitFor({ timeout: 30_000 });
    await page.getByText("factura emitida").waitFor();
    await shot(page, "factura");
    await page.getByRole("link", { name: "Mis pedidos" }).click();
    // The list reads the orders' projection, which may trail the order by a moment (under
    // load, while a burst of the SII's verdicts is projected): a shopper reloads.
    const rendered = () => page.getByRole("link", { name: /Pedido del/ }).first().waitFor();
    const listed = page.getByRole("listitem").filter({ hasText: "factura emitida" });
    await rendered();
    for (let tries = 0; !(await listed.isVisible()); tries++) {
      expect(tries < 30, "the factura reaches the orders list");
      await page.waitForTimeout(1_000);
      await page.reload();
      await rendered();
    }
    await axe(page, "mis pedidos (factura)");
  }

  // 5. Two tabs, one unit left: one wins, the other is told there is not enough stock.
  {
    const { context, page } = await shopper("dos-pestanas@example.cl");
    await addToCart(page, "ULTIMA");
    const other = await context.newPage();
    watchConsole(other);
    await other.goto(`${BASE}/carrito`);
    await other.getByRole("button", { name: "Ir a pagar" }).waitFor();
    await page.getByRole("link", { name: /Carro/ }).click();
    await page.getByRole("button", { name: "Ir a pagar" }).click();
    await page.waitForURL(/webpayserver\/initTransaction/);
    await other.getByRole("button", { name: "Ir a pagar" }).click();
    await other.getByText("Sin stock suficiente").waitFor();
    expect(other.url().endsWith("/carrito"), "the second tab stays on its cart");
    await shot(other, "sin-stock");
  }
});
