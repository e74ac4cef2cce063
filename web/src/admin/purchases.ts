// Purchases: the documents suppliers send (the buying side). Receive an envelope from a
// file; list what came, by status and deadline; open one to see its checks, the answers
// mailed to the supplier and its events in the SII's registry; accept it (with
// discrepancies, or with the goods received) or claim it within the law's 8 days; download
// its XML and its PDF.
import { api } from "../api/client";
import { alertBox, field, h, notice, render } from "../store/dom";
import { saveBlob } from "../store/download";
import { type Problem, money, oneOf, tipoDte } from "../store/format";
import { checkCell, filterForm, filterInput, filterSelect, go, pager, rawXml, refused, table, when, xmlFileForm } from "./common";

const STATUSES = ["pending", "accepted_by_law", "accepted", "accepted_with_discrepancies", "claimed", "not_received"] as const;

const STATUS_NAMES: Record<string, string> = {
  pending: "Pendiente (dentro de los 8 días)",
  accepted_by_law: "Aceptado por plazo vencido",
  accepted: "Aceptado",
  accepted_with_discrepancies: "Aceptado con discrepancias",
  claimed: "Reclamado",
  not_received: "No recibido (falló una revisión)",
};

const TYPES = [33, 34, 43, 46, 52, 56, 61] as const;

const CLAIMS: [string, string][] = [
  ["RCD", "Reclamo al contenido del documento (RCD)"],
  ["RFP", "Falta parcial de mercaderías (RFP)"],
  ["RFT", "Falta total de mercaderías (RFT)"],
];

/** A result to show once on the next page rendered (it survives the re-render). */
let flash: string | undefined;

function takeFlash(): HTMLElement | null {
  const text = flash;
  flash = undefined;
  return text ? notice(text) : null;
}

type Received = {
  valid?: boolean;
  decision?: string;
  deadline?: string;
};

/** Where a received document stands, in words. */
function standing(d: Received): string {
  if (!d.valid) return STATUS_NAMES.not_received;
  if (d.decision) return STATUS_NAMES[d.decision] ?? d.decision;
  if (d.deadline && new Date(d.deadline) < new Date()) return STATUS_NAMES.accepted_by_law;
  return STATUS_NAMES.pending;
}

/** A refused verdict in Spanish: what the service or the SII said, without its English. */
function verdictRefusal(problem: Problem): string {
  const detail = problem.detail ?? "";
  const sii = /codResp -?\d+, (.*)$/.exec(detail);
  if (sii) return `El SII rechazó la acción: ${sii[1]}.`;
  if (/already/.test(detail)) return "Este documento ya tiene una decisión registrada.";
  if (/counts as accepted/.test(detail)) return "Pasaron los 8 días desde su recepción: el documento se entiende aceptado (Ley 19.983).";
  if (/has not received/.test(detail)) return "El SII aún no recibe este documento: el proveedor debe enviarlo al SII antes de aceptarlo o reclamarlo.";
  if (/not received/.test(detail)) return "El documento no se recibió como válido: no se puede aceptar ni reclamar.";
  if (problem.status === 503) return "El registro del SII no responde; no se registró nada. Intenta de nuevo en unos minutos.";
  return refused(problem, problem.status ?? 0);
}

/** Saves what `fetched` brings as `name`; a failure is said in `message`. */
async function save(fetched: Promise<{ data?: unknown }>, name: string, message: HTMLElement): Promise<void> {
  message.textContent = "";
  const { data } = await fetched;
  if (data) saveBlob(data as Blob, name);
  else message.textContent = "No pudimos descargar el archivo; intenta de nuevo.";
}

export async function purchasesPage(params: URLSearchParams): Promise<void> {
  const outcome = h("div", { "aria-live": "polite" });
  const { form } = xmlFileForm(
    "envio",
    "Envío del proveedor (XML)",
    "Elige el XML que envió el proveedor.",
    "Recibir",
    async (file, error) => {
      outcome.replaceChildren();
      const { data, error: problem, response } = await api.POST("/v1/dte/received", rawXml(file));
      if (!data) {
        error.textContent =
          response.status === 400
            ? "El archivo no es un envío de DTE legible (EnvioDTE, EnvioBOLETA o DTE)."
            : refused(problem, response.status);
        return;
      }
      const docs = data.documents ?? [];
      const valid = docs.filter((d) => d.valid).length;
      flash = data.repeated
        ? `${file.name} ya se había recibido; no se guardó de nuevo.`
        : `${file.name}: ${docs.length} ${docs.length === 1 ? "documento recibido" : "documentos recibidos"}, ${valid} ${valid === 1 ? "válido" : "válidos"}.`;
      go(`/admin/compras${location.search}`);
    },
    h("h2", {}, "Recibir un envío"),
  );
  const [sLabel, status] = filterSelect("Estado", "f-estado", params.get("estado") ?? "", [
    ["", "Todos"],
    ...STATUSES.map((s): [string, string] => [s, STATUS_NAMES[s]]),
  ]);
  const [tLabel, tipo] = filterSelect("Tipo", "f-tipo", params.get("tipo") ?? "", [
    ["", "Todos"],
    ...TYPES.map((t): [string, string] => [String(t), `${t} · ${tipoDte(t)}`]),
  ]);
  const [rLabel, rut] = filterInput("RUT del proveedor", "f-rut", { value: params.get("rut") ?? "", placeholder: "76.086.428-5" });
  const main = render(
    "Compras",
    h("h1", {}, "Compras: documentos de proveedores"),
    takeFlash(),
    h("p", {}, "Tienes 8 días desde que el SII recibe una factura para aceptarla o reclamarla; después se entiende aceptada."),
    form,
    outcome,
    h("h2", {}, "Documentos recibidos"),
    filterForm("/admin/compras", [["estado", status], ["tipo", tipo], ["rut", rut]], sLabel, tLabel, rLabel),
  );
  const { data, error, response } = await api.GET("/v1/dte/received", {
    params: {
      query: {
        status: oneOf(STATUSES, params.get("estado")),
        tipoDte: oneOf(TYPES, params.get("tipo")),
        rutEmisor: params.get("rut") || undefined,
        pageSize: 50,
        pageToken: params.get("pagina") || undefined,
      },
    },
  });
  if (!data) {
    main.append(alertBox(response.status === 400 ? "Revisa el RUT del proveedor." : refused(error, response.status)));
    return;
  }
  const docs = data.documents ?? [];
  main.append(
    docs.length
      ? table(
          "compras",
          ["Documento", "Folio", "Proveedor", "Total", "Recibido", "Plazo", "Estado"],
          docs.map((d) => [
            h("a", { href: `/admin/compras/${d.id}` }, `${tipoDte(d.tipoDte)} (${d.tipoDte}) N° ${d.folio}`),
            String(d.folio ?? ""),
            `${d.razonSocialEmisor || ""} ${d.rutEmisor ?? ""}`.trim(),
            money(d.mntTotal),
            when(d.receivedAt),
            d.valid ? when(d.deadline) : "—",
            standing(d),
          ]),
          [1, 3],
        )
      : h("p", {}, "No hay documentos recibidos que coincidan."),
    pager(data.nextPageToken, params),
  );
}

export async function purchasePage(_params: URLSearchParams, id: string): Promise<void> {
  const { data: d, error, response } = await api.GET("/v1/dte/received/{id}", { params: { path: { id } } });
  if (!d) {
    render("Compra", h("h1", {}, "Documento recibido"), alertBox(refused(error, response.status)));
    return;
  }
  const name = `${tipoDte(d.tipoDte)} (${d.tipoDte}) N° ${d.folio}`;
  const row = (term: string, value: Node | string) => [h("dt", {}, term), h("dd", {}, value)];
  const message = h("span", { class: "field-error", "aria-live": "polite" });
  const outcome = h("div", { "aria-live": "polite" });
  const undecided = d.valid && !d.decision && !(d.deadline && new Date(d.deadline) < new Date());
  const file = `dte-${d.rutEmisor}-${d.tipoDte}-${d.folio}`;
  render(
    name,
    h("p", {}, h("a", { href: "/admin/compras" }, "← Compras")),
    h("h1", {}, `${name} de ${d.razonSocialEmisor || d.rutEmisor}`),
    takeFlash(),
    outcome,
    h(
      "dl",
      { class: "details" },
      ...row("Estado", standing(d)),
      ...(d.decisionReason ? row("Motivo", d.decisionReason) : []),
      ...row("Proveedor", `${d.razonSocialEmisor || ""} (${d.rutEmisor})`),
      ...row("Emitido", d.fchEmis ?? ""),
      ...row("Total", money(d.mntTotal)),
      ...row("Recibido", when(d.receivedAt)),
      ...row("Recibido por el SII", d.siiReceivedAt ? when(d.siiReceivedAt) : "aún no informado"),
      ...(d.valid ? row("Plazo para aceptar o reclamar", when(d.deadline)) : []),
      ...row("Recepción", `${d.estadoRecepDte} · ${d.estadoDetail ?? ""}`),
    ),
    h(
      "p",
      { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: () => save(api.GET("/v1/dte/received/{id}/xml", { params: { path: { id } }, parseAs: "blob" }), `${file}.xml`, message) }, "Descargar XML"),
      " ",
      d.valid ? h("button", { type: "button", class: "secondary", onclick: () => save(api.GET("/v1/dte/received/{id}/pdf", { params: { path: { id } }, parseAs: "blob" }), `${file}.pdf`, message) }, "Descargar PDF") : null,
      message,
    ),
    h("h2", {}, "Revisiones"),
    table(
      "revisiones",
      ["Esquema", "Firma", "Timbre (TED)", "TED vs documento", "Receptor"],
      [[checkCell(d.schema), checkCell(d.signature), checkCell(d.ted), checkCell(d.tedConsistency), checkCell(d.receptor)]],
    ),
    h("h2", {}, "Registro del SII"),
    (d.siiEvents ?? []).length
      ? table(
          "eventos-sii",
          ["Evento", "Descripción", "Responsable", "Fecha"],
          (d.siiEvents ?? []).map((e) => [e.code ?? "", e.description ?? "", e.responsible ?? "", e.at ?? ""]),
        )
      : h("p", {}, "Sin eventos registrados en el SII."),
    h("h2", {}, "Respuestas al proveedor"),
    (d.answers ?? []).length
      ? table(
          "respuestas",
          ["Respuesta", "Enviada a", "Estado del envío", "XML firmado"],
          (d.answers ?? []).map((a) => {
            const kind = ({ recepcion: "Acuse de recibo del envío", resultado: "Resultado comercial", recibos: "Recibo de mercaderías" } as Record<string, string>)[a.kind ?? ""] ?? a.kind ?? "";
            return [
              kind,
              a.answerTo || "sin dirección conocida",
              a.sentAt
                ? `enviada ${when(a.sentAt)}`
                : !a.answerTo
                  ? "no se envía: descárgala y entrégala al proveedor"
                  : a.error
                    ? `reintentando: ${a.error}`
                    : "por enviar",
              h(
                "button",
                { type: "button", class: "secondary", "aria-label": `Descargar ${kind}`, onclick: () =>
                    save(api.GET("/v1/dte/received-answers/{id}", { params: { path: { id: a.id ?? "" } }, parseAs: "blob" }), `${file}-${a.kind}.xml`, message),
                },
                "Descargar",
              ),
            ];
          }),
        )
      : h("p", {}, "Sin respuestas."),
    undecided ? decisionForms(id, outcome) : null,
  );
}

/** What a verdict did: facturas (33, 34, 43) are also registered with the SII. */
function registered(tipo: number | undefined, done: string): string {
  return [33, 34, 43].includes(tipo ?? 0)
    ? `${done} y registrado en el SII; la respuesta se envía al proveedor.`
    : `${done}; la respuesta se envía al proveedor.`;
}

/** The accept and claim forms; each shows its problem beside the field, or the API's refusal. */
function decisionForms(id: string, outcome: HTMLElement): HTMLElement {
  const discrepancies = field("Discrepancias (opcional)", "discrepancias", { maxlength: "200" });
  const goods = h("input", { id: "f-mercaderia", name: "mercaderia", type: "checkbox" }) as HTMLInputElement;
  const recinto = field("Lugar de recepción (recinto)", "recinto", { maxlength: "80" });
  const accept = h(
    "form",
    {
      class: "form",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        recinto.error.textContent = "";
        outcome.replaceChildren();
        if (goods.checked && !recinto.input.value.trim()) {
          recinto.error.textContent = "Indica dónde recibiste la mercadería.";
          recinto.input.focus();
          return;
        }
        const { data, error, response } = await api.POST("/v1/dte/received/{id}:accept", {
          params: { path: { id } },
          body: { discrepancies: discrepancies.input.value.trim(), goodsReceived: goods.checked, recinto: recinto.input.value.trim() },
        });
        if (!data) {
          outcome.replaceChildren(alertBox(verdictRefusal({ ...(error as Problem), status: response.status })));
          return;
        }
        flash = registered(data.tipoDte, "Documento aceptado");
        go(`/admin/compras/${id}`);
      },
    },
    h("h2", {}, "Aceptar"),
    discrepancies.wrap,
    h("div", { class: "field" }, h("label", { for: "f-mercaderia" }, goods, " Recibí la mercadería o el servicio (Ley 19.983)")),
    recinto.wrap,
    h("button", { type: "submit" }, "Aceptar documento"),
  );
  const reason = field("Motivo del reclamo", "motivo", { maxlength: "200" });
  const [kindLabel, kind] = filterSelect("Tipo de reclamo", "f-reclamo", "RCD", CLAIMS);
  const claim = h(
    "form",
    {
      class: "form",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        reason.error.textContent = "";
        outcome.replaceChildren();
        if (!reason.input.value.trim()) {
          reason.error.textContent = "Indica por qué reclamas el documento.";
          reason.input.focus();
          return;
        }
        const { data, error, response } = await api.POST("/v1/dte/received/{id}:claim", {
          params: { path: { id } },
          body: { reason: reason.input.value.trim(), action: oneOf(["RCD", "RFP", "RFT"] as const, kind.value) },
        });
        if (!data) {
          outcome.replaceChildren(alertBox(verdictRefusal({ ...(error as Problem), status: response.status })));
          return;
        }
        flash = registered(data.tipoDte, "Documento reclamado");
        go(`/admin/compras/${id}`);
      },
    },
    h("h2", {}, "Reclamar"),
    reason.wrap,
    h("div", { class: "field" }, kindLabel),
    h("button", { type: "submit" }, "Reclamar documento"),
  );
  return h("div", { class: "decisions" }, accept, claim);
}
