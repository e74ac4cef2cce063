// The back-office's purchases in Chromium: the admin receives a supplier's envelope from a
// file (a missing file is named beside the field), finds its two facturas pending, accepts
// one with the goods received (the place is asked for beside its field) and claims the
// other for goods wholly missing (the reason is asked for); each verdict shows the SII
// registry's events, the accepted one downloads as a PDF; a document addressed to another
// company is listed as not received, with the failing check named and no verdict offered.
// axe-core on every page, a screenshot of each. ENVELOPE_FILE (the supplier's facturas 7
// and 8, already sent to the SII) and NOT_OURS_FILE are given by the Rust test.
import { readFileSync } from "node:fs";
import { SHOTS, adminSession, axe, expect, run, shot } from "./browser.mjs";

await run(async () => {
  const { page } = await adminSession();
  await page.getByRole("link", { name: "Compras" }).click();
  await page.getByRole("heading", { name: "Compras: documentos de proveedores" }).waitFor();
  await page.getByText("No hay documentos recibidos que coincidan.").waitFor();
  await axe(page, "admin compras vacía");

  // No file chosen: said beside the field.
  await page.getByRole("button", { name: "Recibir" }).click();
  await page.locator("#f-envio-error", { hasText: "Elige el XML que envió el proveedor." }).waitFor();
  await page.getByLabel("Envío del proveedor (XML)").setInputFiles(process.env.ENVELOPE_FILE);
  await page.getByRole("button", { name: "Recibir" }).click();
  await page.getByText("envio-proveedor.xml: 2 documentos recibidos, 2 válidos.").waitFor();
  for (const folio of [7, 8]) {
    await page.getByRole("row", { name: new RegExp(`N° ${folio} .*Proveedora .*Pendiente`) }).waitFor();
  }
  await axe(page, "admin compras");
  await shot(page, "compras");

  // Accepted with the goods received: the place is required.
  await page.getByRole("link", { name: "Factura electrónica (33) N° 7" }).click();
  await page.getByRole("heading", { name: /N° 7 de Proveedora Ñuñoa Ltda\./ }).waitFor();
  await page.getByText("Sin eventos registrados en el SII.").waitFor();
  await axe(page, "admin compra pendiente");
  await shot(page, "compra-pendiente");
  await page.getByLabel("Recibí la mercadería o el servicio (Ley 19.983)").check();
  await page.getByRole("button", { name: "Aceptar documento" }).click();
  await page.locator("#f-recinto-error", { hasText: "Indica dónde recibiste la mercadería." }).waitFor();
  await page.getByLabel("Lugar de recepción (recinto)").fill("Bodega Quilicura");
  await page.getByRole("button", { name: "Aceptar documento" }).click();
  await page.getByText("Documento aceptado y registrado en el SII; la respuesta se envía al proveedor.").waitFor();
  await page.locator("#eventos-sii tr", { hasText: "ACD" }).waitFor();
  await page.locator("#eventos-sii tr", { hasText: "ERM" }).waitFor();
  await page.locator("dd", { hasText: "Aceptado" }).first().waitFor();
  expect(!(await page.getByRole("button", { name: "Aceptar documento" }).count()), "no second verdict is offered");
  await page.locator("#respuestas tr", { hasText: "Recibo de mercaderías" }).waitFor();
  const answer = page.waitForEvent("download");
  await page.getByRole("button", { name: "Descargar Recibo de mercaderías" }).click();
  const recibo = `${SHOTS}/recibo.xml`;
  await (await answer).saveAs(recibo);
  expect(readFileSync(recibo, "latin1").includes("<EnvioRecibos"), "the signed EnvioRecibos downloads");
  await axe(page, "admin compra aceptada");
  await shot(page, "compra-aceptada");
  const download = page.waitForEvent("download");
  await page.getByRole("button", { name: "Descargar PDF" }).click();
  const pdfPath = `${SHOTS}/factura-proveedor.pdf`;
  await (await download).saveAs(pdfPath);
  expect(readFileSync(pdfPath).subarray(0, 5).toString() === "%PDF-", "the PDF downloads");

  // Claimed for goods wholly missing: the reason is required.
  await page.getByRole("link", { name: "← Compras" }).click();
  await page.getByRole("link", { name: "Factura electrónica (33) N° 8" }).click();
  await page.getByRole("button", { name: "Reclamar documento" }).click();
  await page.locator("#f-motivo-error", { hasText: "Indica por qué reclamas el documento." }).waitFor();
  await page.getByLabel("Motivo del reclamo").fill("No llegó ninguna caja");
  await page.getByLabel("Tipo de reclamo").selectOption("RFT");
  await page.getByRole("button", { name: "Reclamar documento" }).click();
  await page.getByText("Documento reclamado y registrado en el SII; la respuesta se envía al proveedor.").waitFor();
  await page.locator("#eventos-sii tr", { hasText: "RFT" }).waitFor();
  await page.locator("dd", { hasText: "No llegó ninguna caja" }).waitFor();
  await axe(page, "admin compra reclamada");
  await shot(page, "compra-reclamada");

  // Filtered by status.
  await page.getByRole("link", { name: "← Compras" }).click();
  // The list has come (the filters are live) before one is chosen.
  await page.getByRole("link", { name: "Factura electrónica (33) N° 7" }).waitFor();
  await page.getByLabel("Estado").selectOption("claimed");
  await page.getByRole("button", { name: "Filtrar" }).click();
  await page.waitForURL(/estado=claimed/);
  // The unfiltered list goes (it is never shown in the filtered page), then the filtered
  // one comes.
  await page.getByRole("link", { name: "Factura electrónica (33) N° 7" }).waitFor({ state: "detached" });
  await page.getByRole("row", { name: /N° 8 .*Reclamado/ }).waitFor();
  expect((await page.locator("#compras tbody tr").count()) === 1, "only the claimed one");

  // Addressed to another company: not received, the failing check named, no verdict.
  await page.getByLabel("Envío del proveedor (XML)").setInputFiles(process.env.NOT_OURS_FILE);
  await page.getByRole("button", { name: "Recibir" }).click();
  await page.getByText("1 documento recibido, 0 válidos.").waitFor();
  await page.getByLabel("Estado").selectOption("not_received");
  await page.getByRole("button", { name: "Filtrar" }).click();
  await page.waitForURL(/estado=not_received/);
  await page.getByRole("link", { name: /N° 2336600/ }).click();
  await page.locator("dd", { hasText: "No recibido" }).waitFor();
  await page.locator("#revisiones .bad").first().waitFor();
  expect(!(await page.getByRole("button", { name: "Aceptar documento" }).count()), "nothing to accept");
  expect(!(await page.getByRole("button", { name: "Descargar PDF" }).count()), "a failed copy is not printed");
  await axe(page, "admin compra no recibida");
  await shot(page, "compra-no-recibida");
});
