// The RUT's check digit (módulo 11), checked as the shopper types; the server's answer
// stays authoritative.

/** Whether `raw` ("76.369.187-K", "76369187k") is a RUT with a right check digit. */
export function validRut(raw: string): boolean {
  const clean = raw.replace(/[.\s-]/g, "").toUpperCase();
  const match = /^(\d{1,8})([\dK])$/.exec(clean);
  if (!match) return false;
  const [, body, dv] = match;
  let sum = 0;
  let factor = 2;
  for (let i = body.length - 1; i >= 0; i--) {
    sum += Number(body[i]) * factor;
    factor = factor === 7 ? 2 : factor + 1;
  }
  const rest = 11 - (sum % 11);
  const expected = rest === 11 ? "0" : rest === 10 ? "K" : String(rest);
  return dv === expected;
}
