// Orders: a filtered, paged list; an order's event history with its metadata, its payments
// and refunds, a full or partial refund after confirmation, and its documents (the nota de
// crédito referencing the boleta) with their PDFs.
import { api } from "../api/client";
import { alertBox, field, h, notice, render } from "../store/dom";
import { downloadDocument } from "../store/download";
import { documentStatus, money, oneOf, orderStatus, tipoDte } from "../store/format";
import { dayEnd, dayStart, filterForm, filterInput, filterSelect, pager, refused, table, when } from "./common";

export const ORDER_STATUSES: [string, string][] = [
  ["", "Todos"],
  ["pending_payment", "Pendientes de pago"],
  ["paid", "Pagados"],
  ["invoiced", "Con documento"],
  ["cancelled", "Cancelados"],
  ["refunded", "Reembolsados"],
];

export async function ordersPage(params: URLSearchParams): Promise<void> {
  const main = render("Pedidos", h("h1", {}, "Pedidos"));
  const [sLabel, status] = filterSelect("Estado", "f-estado", params.get("estado") ?? "", ORDER_STATUSES);
  const [cLabel, customer] = filterInput("Cliente (id)", "f-cliente", { value: params.get("cliente") ?? "" });
  const [fromLabel, from] = filterInput("Desde", "f-desde", { type: "date", value: params.get("desde") ?? "" });
  const [toLabel, to] = filterInput("Hasta", "f-hasta", { type: "date", value: params.get("hasta") ?? "" });
  main.append(
    filterForm("/admin/pedidos", [["estado", status], ["cliente", customer], ["desde", from], ["hasta", to]], sLabel, cLabel, fromLabel, toLabel),
  );
  const { data, error, response } = await api.GET("/v1/orders", {
    params: {
      query: {
        status: oneOf(["pending_payment", "paid", "invoiced", "cancelled", "refunded"] as const, params.get("estado")),
        customerId: params.get("cliente") || undefined,
        createdFrom: dayStart(params.get("desde") ?? ""),
        createdTo: dayEnd(params.get("hasta") ?? ""),
        pageSize: 50,
        pageToken: params.get("pagina") || undefined,
      },
    },
  });
  if (!data) {
    main.append(alertBox(refused(error, response.status)));
    return;
  }
  const orders = data.orders ?? [];
  main.append(
    orders.length
      ? table(
          "pedidos",
          ["Pedido", "Fecha", "Cliente", "Estado", "Total"],
          orders.map((o) => [
            h("a", { href: `/admin/pedidos/${o.id}` }, (o.id ?? "").slice(-12)),
            when(o.createdAt),
            h("a", { href: `/admin/pedidos?cliente=${encodeURIComponent(o.customerId ?? "")}` }, (o.customerId ?? "").slice(-8)),
            orderStatus(o.status, o.documentType),
            money(o.total),
          ]),
          [4],
        )
      : h("p", {}, "No hay pedidos que coincidan."),
    pager(data.nextPageToken, params),
  );
}

export async function orderPage(_params: URLSearchParams, id: string): Promise<void> {
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
            h("td", {}, when(e.occurredAt)),
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
          h("a", { href: `/admin/documentos/${d.id}` }, `Detalle ${d.tipoDte} N° ${d.folio}`),
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

