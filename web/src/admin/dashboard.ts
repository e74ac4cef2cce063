// The dashboard: a period's orders (placed, paid, invoiced, revenue), its documents by SII
// status (numbers and a bar chart), the folios left per type with a warning when low, and
// messages waiting in dead-letter queues. From the admin APIs: /v1/orders:summarize,
// /v1/dte/documents:summarize, /v1/dte/cafs, /v1/dead-letter-queues.
import { api } from "../api/client";
import { alertBox, h, render } from "../store/dom";
import { money, tipoDte } from "../store/format";
import { filterForm, filterSelect, refused, table } from "./common";

const PERIODS: [string, string][] = [
  ["hoy", "Hoy"],
  ["ayer", "Ayer"],
  ["7d", "Últimos 7 días"],
  ["30d", "Últimos 30 días"],
];

/** The period's bounds, in the browser's time zone (the shop's, for its staff). */
function period(name: string): { from: string; to?: string; label: string } {
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const daysAgo = (n: number) => new Date(today.getFullYear(), today.getMonth(), today.getDate() - n).toISOString();
  switch (name) {
    case "ayer":
      return { from: daysAgo(1), to: today.toISOString(), label: "ayer" };
    case "7d":
      return { from: daysAgo(6), label: "los últimos 7 días" };
    case "30d":
      return { from: daysAgo(29), label: "los últimos 30 días" };
    default:
      return { from: today.toISOString(), label: "hoy" };
  }
}

/** The SII's verdicts as staff read them; every step before a verdict is "waiting". */
const SII_GROUPS: { label: string; statuses: string[]; colour: string }[] = [
  { label: "Aceptados", statuses: ["accepted"], colour: "bar-ok" },
  { label: "Aceptados con reparos", statuses: ["accepted_with_objections"], colour: "bar-warn" },
  { label: "Rechazados", statuses: ["rejected"], colour: "bar-bad" },
  { label: "En espera", statuses: ["pending_folio", "numbered", "issued", "submitted"], colour: "bar-wait" },
];

const SVG = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string>, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Horizontal bars, one per group; the numbers are in the table beside it. */
function barChart(rows: { label: string; value: number; colour: string }[], description: string): SVGElement {
  const max = Math.max(1, ...rows.map((r) => r.value));
  const width = 360;
  const chart = svg("svg", { viewBox: `0 0 ${width + 200} ${rows.length * 28}`, role: "img", "aria-label": description, class: "chart" });
  rows.forEach((r, i) => {
    const y = i * 28;
    chart.append(
      svg("text", { x: "0", y: String(y + 18), class: "chart-label" }, r.label),
      svg("rect", { x: "170", y: String(y + 4), height: "18", width: String(Math.max(r.value ? 2 : 0, (r.value / max) * width)), class: r.colour }),
      svg("text", { x: String(176 + (r.value / max) * width), y: String(y + 18), class: "chart-label" }, String(r.value)),
    );
  });
  return chart;
}

function figure(label: string, value: string, id: string): HTMLElement {
  return h("div", { class: "figure", id }, h("dt", {}, label), h("dd", {}, value));
}

export async function dashboardPage(params: URLSearchParams): Promise<void> {
  const chosen = params.get("periodo") ?? "hoy";
  const p = period(chosen);
  const main = render("Resumen", h("h1", {}, "Resumen"));
  const [pLabel, select] = filterSelect("Período", "periodo", chosen, PERIODS);
  main.append(filterForm("/admin/resumen", [["periodo", select]], pLabel));
  const [orders, documents, cafs, dead] = await Promise.all([
    api.GET("/v1/orders:summarize", { params: { query: { createdFrom: p.from, createdTo: p.to } } }),
    api.GET("/v1/dte/documents:summarize", { params: { query: { issuedFrom: p.from, issuedTo: p.to } } }),
    api.GET("/v1/dte/cafs"),
    api.GET("/v1/dead-letter-queues"),
  ]);

  main.append(h("h2", {}, `Pedidos de ${p.label}`));
  if (orders.data) {
    const o = orders.data;
    main.append(
      h(
        "dl",
        { class: "figures", id: "pedidos-resumen" },
        figure("Pedidos", String(o.placed ?? 0), "k-pedidos"),
        figure("Pagados", String(o.paid ?? 0), "k-pagados"),
        figure("Con documento", String(o.invoiced ?? 0), "k-documento"),
        figure("Ingresos (con IVA, menos reembolsos)", money(o.revenue), "k-ingresos"),
      ),
    );
  } else main.append(alertBox(refused(orders.error, orders.response.status)));

  main.append(h("h2", {}, `Documentos de ${p.label} según el SII`));
  if (documents.data) {
    const counts = new Map((documents.data.statuses ?? []).map((s) => [s.status ?? "", s.documents ?? 0]));
    const rows = SII_GROUPS.map((g) => ({ label: g.label, colour: g.colour, value: g.statuses.reduce((n, s) => n + (counts.get(s) ?? 0), 0) }));
    main.append(
      h(
        "div",
        { class: "chart-pair" },
        table("sii-resumen", ["Estado", "Documentos"], rows.map((r) => [r.label, String(r.value)]), [1]),
        barChart(rows, `Documentos de ${p.label}: ${rows.map((r) => `${r.label} ${r.value}`).join(", ")}`),
      ),
    );
  } else main.append(alertBox(refused(documents.error, documents.response.status)));

  main.append(h("h2", {}, "Folios disponibles"));
  if (cafs.data) {
    const folios = cafs.data.folios ?? [];
    const low = folios.filter((f) => f.low);
    main.append(
      ...low.map((f) => alertBox(`Quedan pocos folios de ${tipoDte(f.tipoDte)} (${f.tipoDte}): ${f.remaining}. Pide un CAF nuevo al SII y cárgalo en Folios.`)),
      folios.length
        ? table("folios-resumen", ["Tipo", "Folios restantes"], folios.map((f) => [`${tipoDte(f.tipoDte)} (${f.tipoDte})`, String(f.remaining ?? 0)]), [1])
        : alertBox("No hay CAF cargados: no se puede emitir ningún documento."),
    );
  } else main.append(alertBox(refused(cafs.error, cafs.response.status)));

  main.append(h("h2", {}, "Mensajes sin procesar"));
  if (dead.data) {
    const waiting = (dead.data.queues ?? []).filter((q) => (q.messages ?? 0) > 0);
    main.append(
      waiting.length
        ? h(
            "div",
            {},
            alertBox("Hay mensajes que los servicios no pudieron procesar."),
            table("colas-muertas", ["Cola", "Mensajes"], waiting.map((q) => [`${q.queue}.dead`, String(q.messages)]), [1]),
            h("p", {}, h("a", { href: "/admin/mensajes" }, "Revisar los mensajes sin procesar")),
          )
        : h("p", { id: "colas-muertas" }, "Ninguno: todas las colas de mensajes muertos están vacías."),
    );
  } else main.append(alertBox(refused(dead.error, dead.response.status)));
}
