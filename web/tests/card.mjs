// The storefront when the shop takes cards itself (PAYMENT_PROVIDER=sandbox), driven with
// the keyboard alone: an approved card (4242…) pays and the order follows to the SII's
// acceptance; a declined one (4000000000000002) says why, the order is cancelled and the
// product's stock comes back. Helpers and checks: ./browser.mjs.
import { BASE, addToCart, axe, expect, run, shopper, shot } from "./browser.mjs";

/** Focuses a control and presses Enter: what a keyboard user does. */
async function press(locator) {
  await locator.focus();
  await locator.page().keyboard.press("Enter");
}

/** Types into a field with the keyboard. */
async function type(locator, text) {
  await locator.focus();
  await locator.page().keyboard.type(text);
}

async function payWithCard(page, number) {
  await press(page.getByRole("link", { name: /Carro/ }));
  await page.getByRole("heading", { name: "Tu carro" }).waitFor();
  await press(page.getByRole("button", { name: "Ir a pagar" }));
  await page.getByRole("heading", { name: "Pagar con tarjeta" }).waitFor();
  await axe(page, "tarjeta");
  // The form takes focus: its first field is ready to type in.
  expect(await page.getByLabel("Número de tarjeta").evaluate((el) => el === document.activeElement), "the card number has focus");
  await page.keyboard.type(number);
  await type(page.getByLabel("Mes de vencimiento"), "12");
  await type(page.getByLabel("Año de vencimiento"), "2030");
  await type(page.getByLabel("Código de seguridad"), "123");
  await type(page.getByLabel("Nombre en la tarjeta"), "Ana Pérez");
  await shot(page, "tarjeta");
  await page.keyboard.press("Enter");
}

await run(async () => {
  {
    const { page } = await shopper("tarjeta@example.cl");
    // Access tokens live ACCESS_TTL seconds here: the page trades its cookie for a new
    // one a minute before expiry, by itself, and stays signed in.
    const refreshed = await page.waitForResponse(
      (r) => r.url().endsWith("/v1/auth/refresh") && r.status() === 200,
      { timeout: 30_000 },
    );
    expect(!("refreshToken" in (await refreshed.json())), "the refresh token stays in its cookie");
    await addToCart(page, "CAFE-GRANO");
    await payWithCard(page, "4242424242424242");
    await page.waitForURL(/\/pedidos\/[^/?]+\?pago=aprobado/);
    await page.getByText("Pago aprobado").waitFor();
    await page.getByText("aceptado por el SII").waitFor({ timeout: 30_000 });
    await axe(page, "pedido pagado con tarjeta");
    await shot(page, "tarjeta-aprobada");
  }
  {
    const { page } = await shopper("rechazada@example.cl");
    await addToCart(page, "TE-VERDE");
    await payWithCard(page, "4000000000000002");
    await page.getByText("El banco rechazó la tarjeta. El pedido fue cancelado.").waitFor();
    await shot(page, "tarjeta-rechazada");
    await page.waitForURL(/\?pago=rechazado/);
    await page.locator("#estado", { hasText: "cancelado" }).waitFor({ timeout: 20_000 });
    await axe(page, "pedido rechazado");
    await page.goto(`${BASE}/producto/TE-VERDE`);
    await page.getByText("quedan 5").waitFor({ timeout: 20_000 });
    await shot(page, "tarjeta-stock-devuelto");
  }
});
