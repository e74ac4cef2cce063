// The storefront: catalog, product, cart, sign-in, checkout through Webpay, and the
// shopper's orders with their tax documents. Every API call goes through the generated
// client (../api/client.ts).
import { api } from "../api/client";
import * as cart from "./cart";
import { alertBox, field, h, render } from "./dom";
import { downloadDocument } from "./download";
import {
  PAYMENT_OUTCOME,
  type Problem,
  documentStatus,
  fieldMessage,
  money,
  oneOf,
  orderStatus,
  spanish,
  tipoDte,
} from "./format";
import { validRut } from "./rut";
import * as session from "./session";

type Route = (params: URLSearchParams, ...parts: string[]) => Promise<void>;

const routes: [RegExp, Route][] = [
  [/^\/$/, catalogPage],
  [/^\/producto\/([^/]+)$/, productPage],
  [/^\/carrito$/, cartPage],
  [/^\/ingresar$/, signInPage],
  [/^\/pedidos$/, ordersPage],
  [/^\/pedidos\/([^/]+)$/, orderPage],
];

// The order page's long poll, cancelled when the shopper navigates away.
let following: AbortController | undefined;

async function route(): Promise<void> {
  following?.abort();
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  for (const [pattern, page] of routes) {
    const match = pattern.exec(path);
    if (match) {
      await page(params, ...match.slice(1).map(decodeURIComponent));
      return;
    }
  }
  render("No encontrado", h("h1", {}, "Página no encontrada"), h("p", {}, h("a", { href: "/" }, "Volver al catálogo")));
}

function go(path: string): void {
  history.pushState(null, "", path);
  void route().then(() => (document.getElementById("main") as HTMLElement).focus());
}

// Links inside the app navigate without reloading.
document.addEventListener("click", (event) => {
  const link = (event.target as Element).closest?.("a");
  if (!link || link.target || link.hasAttribute("download") || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/v1/")) return;
  event.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => void route());

function nav(): void {
  const items = [
    h("li", {}, h("a", { href: "/" }, "Catálogo")),
    h("li", {}, h("a", { href: "/carrito" }, `Carro (${cart.count()})`)),
  ];
  if (session.signedIn()) {
    items.push(h("li", {}, h("a", { href: "/pedidos" }, "Mis pedidos")));
    items.push(
      h(
        "li",
        {},
        h("button", { type: "button", class: "secondary", onclick: () => void session.signOut().then(() => go("/")) }, "Salir"),
      ),
    );
  } else {
    items.push(h("li", {}, h("a", { href: "/ingresar" }, "Ingresar")));
  }
  (document.getElementById("nav") as HTMLElement).replaceChildren(h("ul", {}, ...items));
}
session.onChange(nav);
document.addEventListener("cart-changed", nav);

function availability(available: number | undefined): HTMLElement {
  const n = available ?? 0;
  if (n <= 0) return h("span", { class: "stock-out" }, "agotado");
  return h("span", { class: "muted" }, n === 1 ? "queda 1" : `quedan ${n}`);
}

let categoriesOnce: Promise<string[]> | undefined;

/** The catalog's categories (from its products, asked once per visit). */
function knownCategories(): Promise<string[]> {
  categoriesOnce ??= api
    .GET("/v1/products", { params: { query: { pageSize: 100 } } })
    .then(({ data }) =>
      [...new Set((data?.products ?? []).map((p) => p.category ?? "").filter((c) => c))].sort((a, b) =>
        a.localeCompare(b, "es-CL"),
      ),
    )
    .catch(() => []);
  return categoriesOnce;
}

async function catalogPage(params: URLSearchParams): Promise<void> {
  const q = params.get("q") ?? "";
  const orderBy = params.get("orden") ?? "";
  const minPrice = params.get("desde") ?? "";
  const maxPrice = params.get("hasta") ?? "";
  const pageToken = params.get("pagina") ?? "";
  const category = params.get("categoria") ?? "";
  const categories = await knownCategories();
  const search = field("Buscar", "q", { type: "search", value: q });
  const from = field("Precio desde", "desde", { type: "number", min: "0", value: minPrice, inputmode: "numeric" });
  const to = field("Precio hasta", "hasta", { type: "number", min: "0", value: maxPrice, inputmode: "numeric" });
  const sort = h(
    "select",
    { id: "f-orden", name: "orden" },
    ...[
      ["", "Relevancia"],
      ["price", "Precio: menor a mayor"],
      ["-price", "Precio: mayor a menor"],
      ["name", "Nombre"],
    ].map(([value, label]) => h("option", { value, selected: value === orderBy }, label)),
  );
  const categorySelect = h(
    "select",
    { id: "f-categoria", name: "categoria" },
    h("option", { value: "" }, "Todas"),
    ...categories.map((c) => h("option", { value: c, selected: c === category }, c)),
  );
  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (e: Event) => {
        e.preventDefault();
        const next = new URLSearchParams();
        for (const [k, v] of new FormData(e.target as HTMLFormElement)) if (v) next.set(k, String(v));
        go(`/?${next}`);
      },
    },
    search.wrap,
    h("label", { for: "f-categoria" }, "Categoría", categorySelect),
    from.wrap,
    to.wrap,
    h("label", { for: "f-orden" }, "Ordenar", sort),
    h("button", { type: "submit" }, "Buscar"),
  );
  const main = render("Catálogo", h("h1", {}, q ? `Resultados para «${q}»` : "Catálogo"), form);
  const { data, error, response } = await api.GET("/v1/products", {
    params: {
      query: {
        q: q || undefined,
        category: category || undefined,
        orderBy: oneOf(["name", "-name", "price", "-price"] as const, orderBy),
        minPrice: minPrice ? Number(minPrice) : undefined,
        maxPrice: maxPrice ? Number(maxPrice) : undefined,
        pageSize: 12,
        pageToken: pageToken || undefined,
      },
    },
  });
  if (!data) {
    main.append(alertBox(spanish({ ...(error as Problem), status: response.status })));
    return;
  }
  const products = data.products ?? [];
  if (products.length === 0) main.append(h("p", {}, "No encontramos productos con esos criterios."));
  main.append(
    h(
      "ul",
      { class: "grid" },
      ...products.map((p) =>
        h(
          "li",
          { class: "card" },
          h("h2", {}, h("a", { href: `/producto/${encodeURIComponent(p.sku ?? "")}` }, p.name ?? "")),
          h("span", { class: "price" }, money(p.grossPrice)),
          h("span", { class: "muted" }, p.exempt ? "exento de IVA" : "IVA incluido"),
          availability(p.available),
          h(
            "button",
            {
              type: "button",
              disabled: (p.available ?? 0) <= 0,
              "aria-label": `Agregar al carro: ${p.name}`,
              onclick: () => cart.add(p.sku ?? "", p.name ?? ""),
            },
            "Agregar al carro",
          ),
        ),
      ),
    ),
  );
  if (data.nextPageToken) {
    const next = new URLSearchParams(params);
    next.set("pagina", data.nextPageToken);
    main.append(h("p", { class: "pager" }, h("a", { href: `/?${next}` }, "Página siguiente")));
  }
}

async function productPage(_params: URLSearchParams, sku: string): Promise<void> {
  const main = render("Producto");
  const { data: p, error, response } = await api.GET("/v1/products/{sku}", { params: { path: { sku } } });
  if (!p) {
    main.append(alertBox(spanish({ ...(error as Problem), status: response.status })));
    return;
  }
  const quantity = field("Cantidad", "cantidad", { type: "number", min: "1", max: String(p.available ?? 1), value: "1" });
  const added = h("p", { "aria-live": "polite" });
  render(
    p.name ?? "Producto",
    h("h1", {}, p.name ?? ""),
    h("p", {}, p.description ?? ""),
    h("p", { class: "price" }, money(p.grossPrice), " ", h("span", { class: "muted" }, p.exempt ? "(exento de IVA)" : "(IVA incluido)")),
    h("p", {}, availability(p.available)),
    h(
      "form",
      {
        class: "form",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const n = Number(quantity.input.value);
          if (!Number.isInteger(n) || n < 1) {
            quantity.error.textContent = "Ingresa una cantidad de 1 o más.";
            return;
          }
          if (n > (p.available ?? 0)) {
            quantity.error.textContent = "Sin stock suficiente para esa cantidad.";
            return;
          }
          quantity.error.textContent = "";
          cart.add(p.sku ?? sku, p.name ?? sku, n);
          added.textContent = "Agregado al carro.";
        },
      },
      quantity.wrap,
      h("button", { type: "submit", disabled: (p.available ?? 0) <= 0 }, "Agregar al carro"),
    ),
    added,
  );
}

async function cartPage(): Promise<void> {
  const current = cart.lines();
  if (current.length === 0) {
    render("Carro", h("h1", {}, "Tu carro"), h("p", {}, "Tu carro está vacío. ", h("a", { href: "/" }, "Ver el catálogo")));
    return;
  }
  const main = render("Carro", h("h1", {}, "Tu carro"));
  const products = await Promise.all(
    current.map(async (line) => (await api.GET("/v1/products/{sku}", { params: { path: { sku: line.sku } } })).data),
  );
  const errors = new Map<string, HTMLElement>();
  let total = 0;
  const rows = current.map((line, i) => {
    const p = products[i];
    const price = p?.grossPrice ?? 0;
    total += price * line.quantity;
    const error = h("span", { class: "field-error", id: `err-${line.sku}`, "aria-live": "polite" });
    errors.set(line.sku, error);
    const qty = h("input", {
      type: "number",
      min: "0",
      value: String(line.quantity),
      "aria-label": `Cantidad de ${line.name}`,
      "aria-describedby": `err-${line.sku}`,
      onchange: (e: Event) => {
        cart.setQuantity(line.sku, Number((e.target as HTMLInputElement).value));
        void cartPage();
      },
    });
    return h(
      "tr",
      {},
      h("td", {}, line.name, " ", error),
      h("td", {}, qty),
      h("td", { class: "num" }, money(price * line.quantity)),
    );
  });
  const problem = h("div", { "aria-live": "assertive" });
  const payButton = h("button", { type: "submit" }, "Ir a pagar");
  const taxDocument = documentChoice();
  main.append(
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", {}, "Producto"), h("th", {}, "Cantidad"), h("th", { class: "num" }, "Subtotal"))),
      h("tbody", {}, ...rows),
      h("tfoot", {}, h("tr", {}, h("th", {}, "Total"), h("td", {}), h("td", { class: "num" }, money(total)))),
    ),
    h(
      "form",
      {
        class: "form",
        novalidate: true,
        onsubmit: (e: Event) => {
          e.preventDefault();
          void checkout(current, errors, taxDocument, problem, payButton as HTMLButtonElement);
        },
      },
      taxDocument.element,
      session.signedIn() ? null : h("p", {}, h("a", { href: "/ingresar?volver=/carrito" }, "Ingresa o crea una cuenta"), " para pagar."),
      payButton,
    ),
    problem,
  );
}

interface DocumentChoice {
  element: HTMLElement;
  /** The order's document and buyer, or null when a field is wrong (shown next to it). */
  read(): { documentType: "boleta" | "factura"; buyer?: Record<string, string> } | null;
  /** Shows the server's refusals next to their fields; false when none was a buyer field. */
  show(problem: Problem): boolean;
}

/** Boleta by default; factura with the buyer's RUT (checked as typed) and details. */
function documentChoice(): DocumentChoice {
  const boleta = h("input", { type: "radio", name: "documento", value: "boleta", id: "doc-boleta", checked: true }) as HTMLInputElement;
  const factura = h("input", { type: "radio", name: "documento", value: "factura", id: "doc-factura" }) as HTMLInputElement;
  const fields = {
    rut: field("RUT", "rut", { autocomplete: "off", placeholder: "76.369.187-K" }),
    razonSocial: field("Razón social", "razon-social", { autocomplete: "organization" }),
    giro: field("Giro", "giro"),
    address: field("Dirección", "direccion", { autocomplete: "street-address" }),
    comuna: field("Comuna", "comuna"),
  };
  const facturaFields = h("div", { class: "form", hidden: true }, ...Object.values(fields).map((f) => f.wrap));
  const toggle = () => {
    facturaFields.hidden = !factura.checked;
  };
  boleta.addEventListener("change", toggle);
  factura.addEventListener("change", toggle);
  fields.rut.input.addEventListener("input", () => {
    const value = fields.rut.input.value.trim();
    fields.rut.error.textContent = value && !validRut(value) ? "El RUT no es válido: revisa el dígito verificador." : "";
  });
  const element = h(
    "fieldset",
    {},
    h("legend", {}, "Documento tributario"),
    h("label", { for: "doc-boleta" }, h("span", {}, boleta, " Boleta")),
    h("label", { for: "doc-factura" }, h("span", {}, factura, " Factura (con RUT)")),
    facturaFields,
  );
  const names: Record<string, keyof typeof fields> = {
    "buyer.rut": "rut",
    "buyer.razonSocial": "razonSocial",
    "buyer.giro": "giro",
    "buyer.address": "address",
    "buyer.comuna": "comuna",
  };
  return {
    element,
    read() {
      if (!factura.checked) return { documentType: "boleta" };
      let ok = true;
      for (const f of Object.values(fields)) {
        f.error.textContent = f.input.value.trim() ? "" : "Este dato es obligatorio para una factura.";
        if (!f.input.value.trim()) ok = false;
      }
      if (fields.rut.input.value.trim() && !validRut(fields.rut.input.value)) {
        fields.rut.error.textContent = "El RUT no es válido: revisa el dígito verificador.";
        ok = false;
      }
      if (!ok) return null;
      return {
        documentType: "factura",
        buyer: {
          rut: fields.rut.input.value.trim(),
          razonSocial: fields.razonSocial.input.value.trim(),
          giro: fields.giro.input.value.trim(),
          address: fields.address.input.value.trim(),
          comuna: fields.comuna.input.value.trim(),
        },
      };
    },
    show(problem) {
      let shown = false;
      for (const error of problem.errors ?? []) {
        const key = names[error.field ?? ""];
        if (key) {
          fields[key].error.textContent =
            key === "rut" ? "El RUT no es válido: revisa el dígito verificador." : "Revisa este dato.";
          shown = true;
        }
      }
      return shown;
    },
  };
}

/** Checks availability, places the order and sends the shopper to Webpay. */
async function checkout(
  current: cart.CartLine[],
  errors: Map<string, HTMLElement>,
  taxDocument: DocumentChoice,
  problem: HTMLElement,
  button: HTMLButtonElement,
): Promise<void> {
  problem.replaceChildren();
  if (!session.signedIn()) {
    go("/ingresar?volver=/carrito");
    return;
  }
  const chosen = taxDocument.read();
  if (!chosen) return;
  button.disabled = true;
  try {
    let short = false;
    for (const line of current) {
      const { data } = await api.GET("/v1/products/{sku}", { params: { path: { sku: line.sku } } });
      const error = errors.get(line.sku) as HTMLElement;
      if (!data || (data.available ?? 0) < line.quantity) {
        error.textContent = data && (data.available ?? 0) > 0 ? `Sin stock suficiente: quedan ${data.available}.` : "Sin stock suficiente: agotado.";
        short = true;
      } else {
        error.textContent = "";
      }
    }
    if (short) return;
    const placed = await api.POST("/v1/orders", {
      body: {
        lines: current.map((l) => ({ sku: l.sku, quantity: l.quantity })),
        documentType: chosen.documentType,
        buyer: chosen.buyer,
      },
    });
    if (!placed.data) {
      const refused = { ...(placed.error as Problem), status: placed.response.status };
      if (!taxDocument.show(refused)) problem.replaceChildren(alertBox(spanish(refused)));
      return;
    }
    cart.clear();
    await payOrder(placed.data.id ?? "", problem);
  } finally {
    button.disabled = false;
  }
}

type PayBody = { card?: { number: string; expMonth: number; expYear: number; cvc: string; holder: string } };

/** One payment attempt, one Idempotency-Key (reused if the network fails mid-way). */
async function attempt(orderId: string, body: PayBody) {
  const key = crypto.randomUUID();
  for (let tries = 1; ; tries++) {
    try {
      const { data, error, response } = await api.POST("/v1/orders/{order_id}/payments", {
        params: { path: { order_id: orderId } },
        headers: { "Idempotency-Key": key },
        body,
      });
      return { data, problem: data ? undefined : ({ ...(error as Problem), status: response.status } as Problem) };
    } catch (e) {
      if (tries >= 3) return { data: undefined, problem: { status: 0 } as Problem };
    }
  }
}

let cardInRequest: Promise<boolean> | undefined;

/** Whether the shop takes the card itself (asked once). */
function takesCards(): Promise<boolean> {
  cardInRequest ??= api.GET("/v1/payments/options").then(({ data }) => data?.cardInRequest ?? false);
  return cardInRequest;
}

/** Pays through Webpay (the browser goes to its page); with the sandbox, a card form. */
async function payOrder(orderId: string, problem: HTMLElement): Promise<void> {
  if (await takesCards()) {
    problem.replaceChildren(cardForm(orderId));
    (problem.querySelector("input") as HTMLInputElement | null)?.focus();
    return;
  }
  const { data, problem: refused } = await attempt(orderId, {});
  if (data?.status === "redirect" && data.url && data.token) {
    // Webpay's page: the card is typed there, never here.
    location.assign(`${data.url}?token_ws=${encodeURIComponent(data.token)}`);
    return;
  }
  if (data) {
    go(`/pedidos/${orderId}`);
    return;
  }
  problem.replaceChildren(alertBox(spanish(refused)));
}

const DECLINES: Record<string, string> = {
  card_declined: "El banco rechazó la tarjeta.",
  insufficient_funds: "La tarjeta no tiene fondos suficientes.",
};

function cardForm(orderId: string): HTMLElement {
  const number = field("Número de tarjeta", "card-number", { inputmode: "numeric", autocomplete: "cc-number" });
  const month = field("Mes de vencimiento", "card-month", { inputmode: "numeric", autocomplete: "cc-exp-month", placeholder: "MM" });
  const year = field("Año de vencimiento", "card-year", { inputmode: "numeric", autocomplete: "cc-exp-year", placeholder: "AAAA" });
  const cvc = field("Código de seguridad", "card-cvc", { inputmode: "numeric", autocomplete: "cc-csc" });
  const holder = field("Nombre en la tarjeta", "card-holder", { autocomplete: "cc-name" });
  const byField: Record<string, ReturnType<typeof field>> = {
    "card.number": number,
    "card.expMonth": month,
    "card.expYear": year,
    "card.cvc": cvc,
    "card.holder": holder,
  };
  const messages: Record<string, string> = {
    "card.number": "El número de tarjeta no es válido.",
    "card.expMonth": "Revisa el mes de vencimiento.",
    "card.expYear": "La tarjeta está vencida o el año no es válido.",
    "card.cvc": "El código de seguridad debe tener 3 o 4 dígitos.",
    "card.holder": "Ingresa el nombre que aparece en la tarjeta.",
  };
  const outcome = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit" }, "Pagar") as HTMLButtonElement;
  return h(
    "form",
    {
      class: "form",
      novalidate: true,
      onsubmit: async (e: Event) => {
        e.preventDefault();
        for (const f of Object.values(byField)) f.error.textContent = "";
        outcome.replaceChildren();
        submit.disabled = true;
        const { data, problem } = await attempt(orderId, {
          card: {
            number: number.input.value.replace(/\s/g, ""),
            expMonth: Number(month.input.value),
            expYear: Number(year.input.value),
            cvc: cvc.input.value.trim(),
            holder: holder.input.value.trim(),
          },
        });
        submit.disabled = false;
        if (data?.status === "captured") {
          go(`/pedidos/${orderId}?pago=aprobado`);
          return;
        }
        if (data?.status === "failed") {
          outcome.replaceChildren(alertBox(`${DECLINES[data.failureCode ?? ""] ?? "El pago fue rechazado."} El pedido fue cancelado.`));
          window.setTimeout(() => go(`/pedidos/${orderId}?pago=rechazado`), 1500);
          return;
        }
        let shown = false;
        for (const error of problem?.errors ?? []) {
          const target = byField[error.field ?? ""];
          if (target) {
            target.error.textContent = messages[error.field ?? ""];
            shown = true;
          }
        }
        if (!shown) outcome.replaceChildren(alertBox(spanish(problem)));
      },
    },
    h("h2", {}, "Pagar con tarjeta"),
    number.wrap,
    month.wrap,
    year.wrap,
    cvc.wrap,
    holder.wrap,
    submit,
    outcome,
  );
}

async function signInPage(params: URLSearchParams): Promise<void> {
  const back = params.get("volver") ?? "/pedidos";
  const safeBack = back.startsWith("/") && !back.startsWith("//") ? back : "/pedidos";
  const form = (kind: "login" | "register") => {
    const email = field("Correo", `${kind}-email`, { type: "email", autocomplete: "email", required: true });
    const password = field("Contraseña", `${kind}-password`, {
      type: "password",
      autocomplete: kind === "login" ? "current-password" : "new-password",
      required: true,
      minlength: "12",
    });
    const problem = h("div", { "aria-live": "assertive" });
    return h(
      "form",
      {
        class: "form",
        "aria-labelledby": `${kind}-title`,
        onsubmit: async (e: Event) => {
          e.preventDefault();
          email.error.textContent = "";
          password.error.textContent = "";
          problem.replaceChildren();
          const refused =
            kind === "login"
              ? await session.signIn(email.input.value, password.input.value)
              : await session.register(email.input.value, password.input.value);
          if (!refused) {
            go(safeBack);
            return;
          }
          let shown = false;
          for (const error of refused.errors ?? []) {
            const target = error.field === "password" ? password : error.field === "email" ? email : null;
            if (target) {
              target.error.textContent = fieldMessage(error.field ?? "", error.detail);
              shown = true;
            }
          }
          if (refused.status === 409) {
            email.error.textContent = "Ese correo ya tiene una cuenta.";
            shown = true;
          }
          if (!shown) problem.replaceChildren(alertBox(spanish(refused)));
        },
      },
      h("h2", { id: `${kind}-title` }, kind === "login" ? "Ingresar" : "Crear cuenta"),
      email.wrap,
      password.wrap,
      h("button", { type: "submit" }, kind === "login" ? "Ingresar" : "Crear cuenta"),
      problem,
    );
  };
  render("Ingresar", h("h1", {}, "Tu cuenta"), form("login"), form("register"));
}

function needsSignIn(path: string): boolean {
  if (session.signedIn()) return false;
  render(
    "Ingresar",
    h("h1", {}, "Ingresa para continuar"),
    h("p", {}, h("a", { href: `/ingresar?volver=${encodeURIComponent(path)}` }, "Ingresa o crea una cuenta"), " para ver tus pedidos."),
  );
  return true;
}

async function ordersPage(): Promise<void> {
  if (needsSignIn("/pedidos")) return;
  const main = render("Mis pedidos", h("h1", {}, "Mis pedidos"));
  const { data, error, response } = await api.GET("/v1/orders", { params: { query: { pageSize: 50 } } });
  if (!data) {
    main.append(alertBox(spanish({ ...(error as Problem), status: response.status })));
    return;
  }
  const orders = data.orders ?? [];
  if (orders.length === 0) {
    main.append(h("p", {}, "Aún no tienes pedidos."));
    return;
  }
  main.append(
    h(
      "ul",
      {},
      ...orders.map((o) =>
        h(
          "li",
          {},
          h("a", { href: `/pedidos/${o.id}` }, `Pedido del ${new Date(o.createdAt ?? "").toLocaleString("es-CL")}`),
          ` · ${money(o.total)} · ${orderStatus(o.status, o.documentType)}`,
        ),
      ),
    ),
  );
}

async function download(id: string, kind: "pdf" | "xml", name: string): Promise<void> {
  if (!(await downloadDocument(id, kind, name))) {
    document.getElementById("descargas")?.replaceChildren(alertBox("No pudimos descargar el documento; intenta de nuevo."));
  }
}

/** The order's events, as the shopper reads them. */
const HISTORY: Record<string, string> = {
  OrderPlaced: "pedido realizado",
  OrderPaid: "pagado",
  OrderCancelled: "cancelado",
  OrderInvoiced: "documento tributario emitido",
  DocumentSettled: "documento revisado por el SII",
  OrderRefunded: "reembolso",
};

async function orderPage(params: URLSearchParams, id: string): Promise<void> {
  if (needsSignIn(`/pedidos/${id}`)) return;
  const outcome = PAYMENT_OUTCOME[params.get("pago") ?? ""];
  const [order, documents, history] = await Promise.all([
    api.GET("/v1/orders/{id}", { params: { path: { id } } }),
    api.GET("/v1/orders/{order_id}/documents", { params: { path: { order_id: id } } }),
    api.GET("/v1/orders/{id}/events", { params: { path: { id } } }),
  ]);
  const o = order.data;
  if (!o) {
    render("Pedido", h("h1", {}, "Pedido"), alertBox(spanish({ ...(order.error as Problem), status: order.response.status })));
    return;
  }
  const docs = documents.data?.documents ?? [];
  const problem = h("div", { "aria-live": "assertive" });
  const actions =
    o.status === "pending_payment"
      ? h(
          "p",
          { class: "pager" },
          h("button", { type: "button", onclick: () => void payOrder(id, problem) }, "Ir a pagar"),
          h(
            "button",
            {
              type: "button",
              class: "secondary",
              onclick: async () => {
                const { error, response } = await api.POST("/v1/orders/{id}:cancel", { params: { path: { id } }, body: {} });
                if (error) problem.replaceChildren(alertBox(spanish({ ...(error as Problem), status: response.status })));
                else void orderPage(new URLSearchParams(), id);
              },
            },
            "Cancelar pedido",
          ),
        )
      : null;
  render(
    "Pedido",
    h("h1", {}, "Tu pedido"),
    outcome ? h("p", { class: outcome.ok ? "notice" : "alert", role: "status" }, outcome.text) : null,
    h("p", {}, "Estado: ", h("span", { class: "status", id: "estado", "aria-live": "polite" }, orderStatus(o.status, o.documentType))),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", {}, "Producto"), h("th", { class: "num" }, "Cantidad"), h("th", { class: "num" }, "Neto"))),
      h(
        "tbody",
        {},
        ...(o.lines ?? []).map((l) =>
          h("tr", {}, h("td", {}, l.name ?? l.sku ?? ""), h("td", { class: "num" }, String(l.quantity ?? 0)), h("td", { class: "num" }, money(l.lineNet))),
        ),
      ),
    ),
    h(
      "dl",
      {},
      h("dt", {}, "Neto"),
      h("dd", {}, money(o.net)),
      h("dt", {}, "IVA (19%)"),
      h("dd", {}, money(o.iva)),
      h("dt", {}, "Exento"),
      h("dd", {}, money(o.exemptTotal)),
      h("dt", {}, "Total"),
      h("dd", { id: "total" }, money(o.total)),
    ),
    actions,
    problem,
    h("h2", {}, "Historial"),
    h(
      "ol",
      { id: "historial" },
      ...(history.data?.events ?? []).map((e) =>
        h(
          "li",
          {},
          `${new Date(e.occurredAt ?? "").toLocaleString("es-CL")}: ${HISTORY[e.type ?? ""] ?? e.type ?? ""}`,
        ),
      ),
    ),
    h("h2", {}, "Documentos tributarios"),
    h("div", { id: "descargas", "aria-live": "assertive" }),
    docs.length === 0
      ? h("p", { class: "muted" }, "El documento se emite apenas se confirma el pago.")
      : h(
          "ul",
          {},
          ...docs.map((d) =>
            h(
              "li",
              {},
              `${tipoDte(d.tipoDte)} N° ${d.folio} · ${money(d.mntTotal)} · `,
              h("span", { class: "status" }, documentStatus(d.status)),
              " ",
              h("button", { type: "button", class: "secondary", onclick: () => void download(d.id ?? "", "pdf", `dte-${d.tipoDte}-${d.folio}.pdf`) }, "Descargar PDF"),
              " ",
              h("button", { type: "button", class: "secondary", onclick: () => void download(d.id ?? "", "xml", `dte-${d.tipoDte}-${d.folio}.xml`) }, "Descargar XML"),
            ),
          ),
        ),
  );
  // Until the SII has judged its tax document, follow the order: the API answers the
  // long poll when the order changes (no polling from here).
  const settled =
    o.status === "cancelled" ||
    o.status === "refunded" ||
    // Unpaid and nothing on the way (a payment just approved takes a moment to reach it).
    (o.status === "pending_payment" && !["aprobado", "pendiente"].includes(params.get("pago") ?? "")) ||
    ["accepted", "accepted_with_objections", "rejected"].includes(o.documentStatus ?? "");
  if (!settled) void follow(params, id, o.version ?? 0);
}

async function follow(params: URLSearchParams, id: string, version: number): Promise<void> {
  following?.abort();
  const mine = new AbortController();
  following = mine;
  try {
    const { data } = await api.GET("/v1/orders/{id}", {
      params: { path: { id }, query: { waitFor: version } },
      signal: mine.signal,
    });
    if (mine.signal.aborted) return;
    if (data && data.version !== version) {
      await orderPage(params, id);
      return;
    }
  } catch {
    if (mine.signal.aborted) return;
  }
  // Unchanged after the longest wait, or the network failed: ask again (after a pause on
  // failure).
  window.setTimeout(() => {
    if (!mine.signal.aborted) void follow(params, id, version);
  }, 1000);
}

async function start(): Promise<void> {
  nav();
  await session.restore();
  await route();
}
void start();
