// The back-office at /admin: products, orders (events, payments, refunds, documents). The
// admin role is checked by the API on every call; the page only follows what it answers.
import { api } from "../api/client";
import { alertBox, field, h, notice, render } from "../store/dom";
import { downloadDocument } from "../store/download";
import { type Problem, documentStatus, money, orderStatus, spanish, tipoDte } from "../store/format";
import * as session from "../store/session";

type Page = (params: URLSearchParams, ...parts: string[]) => Promise<void>;

const pages: [RegExp, Page][] = [
  [/^\/admin\/?$/, productsPage],
  [/^\/admin\/productos$/, productsPage],
  [/^\/admin\/pedidos$/, ordersPage],
  [/^\/admin\/pedidos\/([^/]+)$/, orderPage],
];

function refused(error: unknown, status: number): string {
  return spanish({ ...(error as Problem), status });
}

function go(path: string): void {
  history.pushState(null, "", path);
  void route();
}

document.addEventListener("click", (event) => {
  const link = (event.target as Element).closest?.("a");
  if (!link || link.target || link.hasAttribute("download") || event.button !== 0) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/admin")) return;
  event.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => void route());

function nav(admin: boolean): void {
  const items = admin
    ? [
        h("li", {}, h("a", { href: "/admin/productos" }, "Productos")),
        h("li", {}, h("a", { href: "/admin/pedidos" }, "Pedidos")),
        h("li", {}, h("a", { href: "/" }, "Ver la tienda")),
        h("li", {}, h("button", { type: "button", class: "secondary", onclick: () => void session.signOut().then(() => route()) }, "Salir")),
      ]
    : [h("li", {}, h("a", { href: "/" }, "Ver la tienda"))];
  (document.getElementById("nav") as HTMLElement).replaceChildren(h("ul", {}, ...items));
}

/** Whether the signed-in user is an admin, as the API says. */
async function isAdmin(): Promise<boolean> {
  if (!session.signedIn()) return false;
  const { data } = await api.GET("/v1/me");
  return (data?.roles ?? []).includes("admin");
}

async function route(): Promise<void> {
  if (!session.signedIn()) {
    nav(false);
    signIn();
    return;
  }
  if (!(await isAdmin())) {
    nav(false);
    render(
      "No autorizado",
      h("h1", {}, "No autorizado"),
      h("p", {}, "Tu cuenta no tiene permisos de administración."),
    );
    return;
  }
  nav(true);
  const params = new URLSearchParams(location.search);
  for (const [pattern, page] of pages) {
    const match = pattern.exec(location.pathname);
    if (match) {
      await page(params, ...match.slice(1).map(decodeURIComponent));
      (document.getElementById("main") as HTMLElement).focus();
      return;
    }
  }
  render("No encontrado", h("h1", {}, "Página no encontrada"));
}

function signIn(): void {
  const email = field("Correo", "email", { type: "email", autocomplete: "email", required: true });
  const password = field("Contraseña", "password", { type: "password", autocomplete: "current-password", required: true });
  const problem = h("div", { "aria-live": "assertive" });
  render(
    "Ingresar",
    h("h1", {}, "Administración"),
    h(
      "form",
      {
        class: "form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          problem.replaceChildren();
          const failed = await session.signIn(email.input.value, password.input.value);
          if (failed) problem.replaceChildren(alertBox(spanish(failed)));
          else await route();
        },
      },
      email.wrap,
      password.wrap,
      h("button", { type: "submit" }, "Ingresar"),
      problem,
    ),
  );
}

async function productsPage(params: URLSearchParams): Promise<void> {
  const q = params.get("q") ?? "";
  const main = render("Productos", h("h1", {}, "Productos"));
  const outcome = h("div", { "aria-live": "polite" });
  // Creating: the price as net, with IVA and gross shown as it is typed.
  const sku = field("SKU", "sku", { required: true });
  const name = field("Nombre", "nombre", { required: true });
  const category = field("Categoría", "categoria");
  const net = field("Precio neto (CLP)", "neto", { type: "number", min: "1", inputmode: "numeric", required: true });
  const stock = field("Stock", "stock", { type: "number", min: "0", inputmode: "numeric", value: "0" });
  const preview = h("p", { class: "muted", id: "precio-bruto", "aria-live": "polite" });
  net.input.addEventListener("input", () => {
    const n = Math.max(0, Math.round(Number(net.input.value) || 0));
    const iva = Math.round(n * 0.19);
    preview.textContent = `Neto ${money(n)} + IVA ${money(iva)} = ${money(n + iva)}`;
  });
  main.append(
    h(
      "form",
      {
        class: "form",
        "aria-labelledby": "nuevo",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          outcome.replaceChildren();
          const { data, error, response } = await api.POST("/v1/products", {
            body: {
              sku: sku.input.value.trim(),
              name: name.input.value.trim(),
              category: category.input.value.trim(),
              netPrice: Number(net.input.value),
              onHand: Number(stock.input.value || 0),
            },
          });
          if (!data) {
            const problem = { ...(error as Problem), status: response.status };
            const fields: Record<string, ReturnType<typeof field>> = { sku, name, netPrice: net, onHand: stock };
            let shown = false;
            for (const e of problem.errors ?? []) {
              const target = fields[e.field ?? ""];
              if (target) {
                target.error.textContent = "Revisa este dato.";
                shown = true;
              }
            }
            if (!shown) outcome.replaceChildren(alertBox(response.status === 409 ? "Ya existe un producto con ese SKU." : spanish(problem)));
            return;
          }
          outcome.replaceChildren(notice(`Producto ${data.sku} creado.`));
          await listProducts(list, q);
        },
      },
      h("h2", { id: "nuevo" }, "Nuevo producto"),
      sku.wrap,
      name.wrap,
      category.wrap,
      net.wrap,
      preview,
      stock.wrap,
      h("button", { type: "submit" }, "Crear producto"),
    ),
    outcome,
  );
  const list = h("div", {});
  main.append(h("h2", {}, "Catálogo"), list);
  await listProducts(list, q);
}

async function listProducts(list: HTMLElement, q: string): Promise<void> {
  const { data, error, response } = await api.GET("/v1/products", { params: { query: { q: q || undefined, pageSize: 50 } } });
  if (!data) {
    list.replaceChildren(alertBox(refused(error, response.status)));
    return;
  }
  list.replaceChildren(
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", {}, "SKU"), h("th", {}, "Nombre"), h("th", { class: "num" }, "Neto"), h("th", { class: "num" }, "Disponible"), h("th", {}, "Stock"))),
      h(
        "tbody",
        {},
        ...(data.products ?? []).map((p) => {
          const id = `stock-${p.sku}`;
          const input = h("input", { id, type: "number", min: "0", value: String(p.onHand ?? 0) }) as HTMLInputElement;
          const message = h("span", { class: "field-error", "aria-live": "polite" });
          return h(
            "tr",
            {},
            h("td", {}, p.sku ?? ""),
            h("td", {}, p.name ?? ""),
            h("td", { class: "num" }, money(p.netPrice)),
            h("td", { class: "num" }, String(p.available ?? 0)),
            h(
              "td",
              {},
              h(
                "form",
                {
                  onsubmit: async (e: Event) => {
                    e.preventDefault();
                    const { error, response } = await api.PUT("/v1/products/{sku}/stock", {
                      params: { path: { sku: p.sku ?? "" } },
                      body: { onHand: Number(input.value) },
                    });
                    const problem = error as Problem | undefined;
                    const said = [problem?.detail ?? "", ...(problem?.errors ?? []).map((e) => e.detail ?? "")].join(" ");
                    const reserved = /(\d+) units are reserved/.exec(said);
                    message.textContent = !error
                      ? "Guardado."
                      : reserved
                        ? `No se puede: ${reserved[1] === "1" ? "hay 1 unidad reservada" : `hay ${reserved[1]} unidades reservadas`} por pedidos sin pagar; el stock no puede quedar bajo eso.`
                        : response.status === 400
                          ? "Ingresa un stock de 0 o más unidades."
                          : refused(error, response.status);
                  },
                },
                h("label", { for: id, class: "sr-only" }, `Stock de ${p.name}`),
                input,
                h("button", { type: "submit", class: "secondary" }, "Guardar"),
                message,
              ),
            ),
          );
        }),
      ),
    ),
  );
}

async function ordersPage(params: URLSearchParams): Promise<void> {
  const status = params.get("estado") ?? "";
  const main = render("Pedidos", h("h1", {}, "Pedidos"));
  const select = h(
    "select",
    { id: "f-estado", name: "estado" },
    ...[["", "Todos"], ["pending_payment", "Pendientes de pago"], ["paid", "Pagados"], ["invoiced", "Con documento"], ["cancelled", "Cancelados"], ["refunded", "Reembolsados"]].map(
      ([value, label]) => h("option", { value, selected: value === status }, label),
    ),
  );
  main.append(
    h(
      "form",
      {
        class: "filters",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const value = (select as HTMLSelectElement).value;
          go(value ? `/admin/pedidos?estado=${value}` : "/admin/pedidos");
        },
      },
      h("label", { for: "f-estado" }, "Estado", select),
      h("button", { type: "submit" }, "Filtrar"),
    ),
  );
  const { data, error, response } = await api.GET("/v1/orders", { params: { query: { status: status || undefined, pageSize: 50 } } });
  if (!data) {
    main.append(alertBox(refused(error, response.status)));
    return;
  }
  main.append(
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", {}, "Pedido"), h("th", {}, "Fecha"), h("th", {}, "Estado"), h("th", { class: "num" }, "Total"))),
      h(
        "tbody",
        {},
        ...(data.orders ?? []).map((o) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: `/admin/pedidos/${o.id}` }, (o.id ?? "").slice(-12))),
            h("td", {}, new Date(o.createdAt ?? "").toLocaleString("es-CL")),
            h("td", {}, orderStatus(o.status, o.documentType)),
            h("td", { class: "num" }, money(o.total)),
          ),
        ),
      ),
    ),
  );
}

async function orderPage(_params: URLSearchParams, id: string): Promise<void> {
  const [order, events, payments, documents] = await Promise.all([
    api.GET("/v1/orders/{id}", { params: { path: { id } } }),
    api.GET("/v1/orders/{id}/events", { params: { path: { id } } }),
    api.GET("/v1/orders/{order_id}/payments", { params: { path: { order_id: id } } }),
    api.GET("/v1/orders/{order_id}/documents", { params: { path: { order_id: id } } }),
  ]);
  const o = order.data;
  if (!o) {
    render("Pedido", h("h1", {}, "Pedido"), alertBox(refused(order.error, order.response.status)));
    return;
  }
  const captured = (payments.data?.payments ?? []).find((p) => p.status === "captured");
  const remaining = captured ? (captured.amount ?? 0) - (captured.refundedAmount ?? 0) : 0;
  const amount = field("Monto a reembolsar (CLP)", "monto", { type: "number", min: "1", max: String(remaining), value: String(remaining) });
  const reason = field("Motivo", "motivo");
  const outcome = h("div", { "aria-live": "assertive" });
  const docs = documents.data?.documents ?? [];
  render(
    "Pedido",
    h("h1", {}, `Pedido ${id.slice(-12)}`),
    h("p", {}, "Estado: ", h("strong", {}, orderStatus(o.status, o.documentType)), ` · Total ${money(o.total)} · Reembolsado ${money(o.refundedAmount)}`),
    h("h2", {}, "Eventos"),
    h(
      "table",
      { id: "eventos" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Evento"), h("th", {}, "Fecha"), h("th", {}, "Metadatos"))),
      h(
        "tbody",
        {},
        ...(events.data?.events ?? []).map((e) =>
          h(
            "tr",
            {},
            h("td", {}, String(e.streamPosition ?? "")),
            h("td", {}, e.type ?? ""),
            h("td", {}, new Date(e.occurredAt ?? "").toLocaleString("es-CL")),
            h("td", {}, h("code", {}, metadata(e.metadata ?? {}))),
          ),
        ),
      ),
    ),
    h("h2", {}, "Pagos"),
    h(
      "ul",
      {},
      ...(payments.data?.payments ?? []).map((p) =>
        h("li", {}, `${p.provider ?? ""} · ${p.status} · ${money(p.amount)} · reembolsado ${money(p.refundedAmount)}`),
      ),
    ),
    captured && remaining > 0
      ? h(
          "form",
          {
            class: "form",
            novalidate: true,
            "aria-labelledby": "reembolso",
            onsubmit: async (e: Event) => {
              e.preventDefault();
              const value = Number(amount.input.value);
              amount.error.textContent = "";
              if (!Number.isInteger(value) || value < 1 || value > remaining) {
                amount.error.textContent = `Ingresa un monto entre $1 y ${money(remaining)}.`;
                return;
              }
              if (!window.confirm(`¿Reembolsar ${money(value)}? No se puede deshacer.`)) return;
              const { error, response } = await api.POST("/v1/orders/{order_id}/refunds", {
                params: { path: { order_id: id } },
                body: { amount: value, reason: reason.input.value.trim() },
              });
              if (error) {
                outcome.replaceChildren(alertBox(refused(error, response.status)));
                return;
              }
              await orderPage(_params, id);
              const main = document.getElementById("main") as HTMLElement;
              main.prepend(notice(`Reembolso de ${money(value)} hecho; la nota de crédito se emite en segundos.`));
            },
          },
          h("h2", { id: "reembolso" }, "Reembolsar"),
          amount.wrap,
          reason.wrap,
          h("button", { type: "submit" }, "Reembolsar"),
          outcome,
        )
      : null,
    h("h2", {}, "Documentos"),
    h(
      "ul",
      { id: "documentos" },
      ...docs.map((d) => {
        const referenced = docs.find((r) => r.id === d.referencesDocumentId);
        return h(
          "li",
          {},
          `${tipoDte(d.tipoDte)} (${d.tipoDte}) N° ${d.folio} · ${money(d.mntTotal)} · ${documentStatus(d.status)}`,
          referenced ? ` · referencia: ${tipoDte(referenced.tipoDte)} N° ${referenced.folio}` : "",
          " ",
          h("button", { type: "button", class: "secondary", onclick: async () => {
                if (!(await downloadDocument(d.id ?? "", "pdf", `dte-${d.tipoDte}-${d.folio}.pdf`))) {
                  document.getElementById("documentos")?.before(alertBox("No pudimos descargar el documento; intenta de nuevo."));
                }
              } }, `PDF ${d.tipoDte} N° ${d.folio}`),
        );
      }),
    ),
    h("p", {}, h("button", { type: "button", class: "secondary", onclick: () => void orderPage(_params, id) }, "Actualizar")),
  );
}

/** An event's metadata as `key=value` pairs, nested objects flattened (`trace.id=…`). */
function metadata(value: Record<string, unknown>, prefix = ""): string {
  return Object.entries(value)
    .map(([k, v]) =>
      v !== null && typeof v === "object" ? metadata(v as Record<string, unknown>, `${prefix}${k}.`) : `${prefix}${k}=${String(v)}`,
    )
    .filter((pair) => pair)
    .join(" ");
}

async function start(): Promise<void> {
  await session.restore();
  await route();
}
void start();
