// The back-office at /admin in Chromium: an admin creates a product and sets its stock
// (the storefront finds it); a customer buys it, the admin finds the order, reads its
// events, refunds part of it and sees the nota de crédito (61) referencing the boleta, and
// downloads its PDF; a customer opening /admin is not let in, and the admin API answers
// them 403. Helpers and checks: ./browser.mjs.
import { BASE, PASSWORD, SHOTS, adminSession, apiCustomer, apiPurchase, axe, browser, call, expect, refusedOnce, run, shot, watchConsole } from "./browser.mjs";

await run(async () => {
  // Signing in at /admin lands on the dashboard.
  const { page } = await adminSession();
  await axe(page, "admin resumen");
  await shot(page, "admin-resumen");
  await page.getByRole("link", { name: "Productos" }).click();
  await page.getByRole("heading", { name: "Productos", exact: true }).waitFor();
  await axe(page, "admin productos");
  await shot(page, "admin-productos");

  // 1. A product, its price shown net + IVA = gross as typed, then its stock.
  await page.getByLabel("SKU").fill("MURTA-1");
  await page.getByLabel("Nombre").fill("Mermelada de murta");
  await page.getByLabel("Categoría", { exact: true }).fill("despensa");
  await page.getByLabel("Precio neto (CLP)").fill("2500");
  await page.locator("#precio-bruto", { hasText: "Neto $2.500 + IVA $475 = $2.975" }).waitFor();
  await page.getByRole("button", { name: "Crear producto" }).click();
  await page.getByText("Producto MURTA-1 creado.").waitFor();
  await page.getByLabel("Stock de Mermelada de murta").fill("7");
  await page.getByRole("row", { name: /MURTA-1/ }).getByRole("button", { name: "Guardar" }).click();
  await page.getByRole("row", { name: /MURTA-1/ }).getByText("Guardado.").waitFor();
  await shot(page, "admin-producto-creado");
  {
    const shopper = await browser.newContext({ locale: "es-CL" });
    const store = await shopper.newPage();
    watchConsole(store);
    await store.goto(`${BASE}/?q=murta`);
    await store.getByRole("link", { name: "Mermelada de murta" }).waitFor();
    await store.getByText("quedan 7").waitFor();
    await shot(store, "tienda-encuentra-murta");
    await shopper.close();
  }

  // 2. A customer buys it (through the API, with the sandbox's card).
  const customer = await apiCustomer("compradora@example.cl");
  const placed = { body: await apiPurchase(customer, "MURTA-1", 2) };

  // The admin finds it, reads its events, refunds part and sees the nota de crédito.
  await page.getByRole("link", { name: "Pedidos" }).click();
  const link = page.getByRole("link", { name: placed.body.id.slice(-12) });
  for (let i = 0; i < 50 && !(await link.count()); i++) {
    await page.waitForTimeout(200);
    await page.getByRole("button", { name: "Filtrar" }).click();
  }
  await axe(page, "admin pedidos");
  await shot(page, "admin-pedidos");
  await link.click();
  await page.locator("#eventos", { hasText: "OrderPlaced" }).waitFor();
  await page.locator("#eventos", { hasText: "OrderPaid" }).waitFor();
  const boleta = page.locator("#documentos", { hasText: "Boleta electrónica (39)" });
  for (let i = 0; i < 100 && !(await boleta.count()); i++) {
    await page.waitForTimeout(200);
    await page.getByRole("button", { name: "Actualizar" }).click();
  }
  await axe(page, "admin pedido");
  await page.getByLabel("Monto a reembolsar (CLP)").fill("999999");
  await page.getByRole("button", { name: "Reembolsar" }).click();
  await page.getByText("Ingresa un monto entre").waitFor();
  await page.getByLabel("Monto a reembolsar (CLP)").fill("1000");
  await page.getByLabel("Motivo").fill("producto dañado");
  await page.getByRole("button", { name: "Reembolsar" }).click();
  await page.getByText("Reembolso de $1.000 hecho").waitFor();
  // Issued in seconds, referencing the boleta (reloaded from the API until then).
  const nota = page.locator("#documentos li", { hasText: /Nota de crédito \(61\).*referencia: Boleta electrónica/ });
  for (let i = 0; i < 100 && !(await nota.count()); i++) {
    await page.waitForTimeout(200);
    await page.getByRole("button", { name: "Actualizar" }).click();
  }
  expect((await nota.count()) === 1, "the nota de crédito references the boleta");
  await shot(page, "admin-nota-de-credito");
  const pdf = page.waitForEvent("download");
  await nota.getByRole("button", { name: /PDF 61/ }).click();
  await (await pdf).saveAs(`${SHOTS}/nota-de-credito.pdf`);

  // Stock cannot go below what unpaid orders reserve: said in words.
  const unpaid = await call("POST", "/v1/orders", { lines: [{ sku: "MURTA-1", quantity: 1 }] }, customer);
  expect(unpaid.status === 200, `placing: ${JSON.stringify(unpaid.body)}`);
  await page.getByRole("link", { name: "Productos" }).click();
  await page.getByLabel("Stock de Mermelada de murta").fill("0");
  await refusedOnce(async () => {
    await page.getByRole("row", { name: /MURTA-1/ }).getByRole("button", { name: "Guardar" }).click();
    await page.getByText("hay 1 unidad reservada por pedidos sin pagar").waitFor();
  });
  await shot(page, "admin-stock-reservado");

  // 5. A customer at /admin: not let in; the admin API answers them 403.
  {
    const customerContext = await browser.newContext({ locale: "es-CL" });
    const other = await customerContext.newPage();
    watchConsole(other);
    await other.goto(`${BASE}/admin`);
    await other.getByLabel("Correo").fill("compradora@example.cl");
    await other.getByLabel("Contraseña").fill(PASSWORD);
    await other.getByRole("button", { name: "Ingresar" }).click();
    await other.getByRole("heading", { name: "No autorizado" }).waitFor();
    await axe(other, "admin no autorizado");
    await shot(other, "admin-no-autorizado");
    for (const [method, path] of [
      ["GET", "/v1/users"],
      ["GET", "/v1/dte/documents"],
      ["POST", "/v1/products"],
    ]) {
      const answer = await call(method, path, method === "POST" ? { sku: "X", name: "X", netPrice: 1 } : undefined, customer);
      expect(answer.status === 403, `${method} ${path} as a customer answered ${answer.status}`);
    }
  }
});
