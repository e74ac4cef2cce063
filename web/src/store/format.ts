const clp = new Intl.NumberFormat("es-CL", { style: "currency", currency: "CLP" });

/** 11979 → "$11.979". */
export function money(amount: number | undefined): string {
  return clp.format(amount ?? 0);
}

const ORDER_STATUS: Record<string, string> = {
  pending_payment: "pendiente de pago",
  paid: "pagado",
  invoiced: "documento emitido",
  cancelled: "cancelado",
  refunded: "reembolsado",
};

export function orderStatus(status: string | undefined, documentType?: string): string {
  if (status === "invoiced") return documentType === "factura" ? "factura emitida" : "boleta emitida";
  return ORDER_STATUS[status ?? ""] ?? status ?? "";
}

const DOCUMENT_STATUS: Record<string, string> = {
  pending_folio: "esperando folio",
  numbered: "con folio asignado",
  issued: "emitido",
  submitted: "enviado al SII",
  accepted: "aceptado por el SII",
  accepted_with_objections: "aceptado con reparos por el SII",
  rejected: "rechazado por el SII",
};

export function documentStatus(status: string | undefined): string {
  return DOCUMENT_STATUS[status ?? ""] ?? status ?? "";
}

const TIPO: Record<number, string> = {
  33: "Factura electrónica",
  34: "Factura exenta",
  39: "Boleta electrónica",
  41: "Boleta exenta",
  43: "Liquidación factura",
  46: "Factura de compra",
  52: "Guía de despacho",
  56: "Nota de débito",
  61: "Nota de crédito",
};

export function tipoDte(tipo: number | undefined): string {
  return TIPO[tipo ?? 0] ?? `Documento ${tipo}`;
}

/** What Webpay's return means for the shopper (`?pago=` on the order page). */
export const PAYMENT_OUTCOME: Record<string, { ok: boolean; text: string }> = {
  aprobado: { ok: true, text: "Pago aprobado. ¡Gracias por tu compra!" },
  rechazado: { ok: false, text: "El pago fue rechazado por el banco emisor. El pedido fue cancelado." },
  anulado: { ok: false, text: "Anulaste el pago en Webpay. No se hizo ningún cargo; puedes volver a pagar." },
  expirado: { ok: false, text: "El formulario de Webpay expiró. No se hizo ningún cargo; puedes volver a pagar." },
  pendiente: { ok: true, text: "Estamos confirmando tu pago con Webpay; esta página se actualizará sola." },
  error: { ok: false, text: "Webpay no respondió. No se hizo ningún cargo; intenta nuevamente." },
};

/** An RFC 9457 problem from the gateway. */
export interface Problem {
  status?: number;
  detail?: string;
  errors?: { field?: string; detail?: string }[];
}

const FIELD_MESSAGES: Record<string, string> = {
  email: "Ingresa un correo válido.",
  password: "La contraseña debe tener al menos 12 caracteres.",
  "buyer.rut": "El RUT no es válido.",
  lines: "Revisa los productos del carro.",
};

/** A refusal, in plain Spanish: never raw JSON, never a stack. */
export function spanish(problem: Problem | undefined, fallback = "No pudimos completar la solicitud."): string {
  const status = problem?.status ?? 0;
  const detail = problem?.detail ?? "";
  if (/insufficient stock|not enough stock|sin stock/i.test(detail)) return "Sin stock suficiente para este pedido.";
  if (status === 401) return "Tu sesión expiró o los datos no son correctos. Vuelve a ingresar.";
  if (status === 403) return "No tienes permiso para hacer esto.";
  if (status === 404) return "No encontramos lo que buscabas.";
  if (status === 409) return "Alguien más modificó esto al mismo tiempo; revisa e intenta de nuevo.";
  if (status === 429) return "Demasiados intentos; espera un momento e intenta de nuevo.";
  if (status >= 500 || status === 0) return "El servicio no está disponible en este momento; intenta de nuevo en unos segundos.";
  return fallback;
}

/** The Spanish message for one field of a 4xx problem. */
export function fieldMessage(field: string, detail: string | undefined): string {
  if (field === "email" && /already|registered|taken/i.test(detail ?? "")) return "Ese correo ya tiene una cuenta.";
  return FIELD_MESSAGES[field] ?? "Revisa este dato.";
}

/**
 * `raw` (from the URL) if it is one of `allowed`, the values the API's contract accepts
 * (its enums, as the generated client types them); otherwise nothing, so a hand-edited
 * URL drops the filter instead of sending what the API refuses.
 */
export function oneOf<T extends string | number>(allowed: readonly T[], raw: string | null | undefined): T | undefined {
  return allowed.find((value) => String(value) === raw);
}
