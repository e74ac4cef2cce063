// Tax documents: a filtered, paged list; one document with its SII track id, status and
// the SII's words, the document a nota de crédito refers to, its XML and PDF; and the
// verification of a received DTE as a table of checks.
import { api } from "../api/client";
import { alertBox, h, notice, render } from "../store/dom";
import { downloadDocument } from "../store/download";
import { documentStatus, money, oneOf, tipoDte } from "../store/format";
import { checkCell, dayEnd, dayStart, filterForm, filterInput, filterSelect, pager, rawXml, refused, table, when, xmlFileForm } from "./common";

export const DOCUMENT_STATUSES: [string, string][] = [
  ["", "Todos"],
  ["pending_folio", "Esperando folio"],
  ["issued", "Emitidos"],
  ["submitted", "Enviados al SII"],
  ["accepted", "Aceptados"],
  ["accepted_with_objections", "Aceptados con reparos"],
  ["rejected", "Rechazados"],
];

const TYPES: [string, string][] = [["", "Todos"], ...[33, 34, 39, 41, 56, 61].map((t): [string, string] => [String(t), `${t} · ${tipoDte(t)}`])];

function downloadButton(id: string, tipo: number | undefined, folio: number | undefined, kind: "pdf" | "xml"): HTMLElement {
  const message = h("span", { class: "field-error", "aria-live": "polite" });
  return h(
    "span",
    {},
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: async () => {
          message.textContent = "";
          if (!(await downloadDocument(id, kind, `dte-${tipo}-${folio}.${kind}`))) message.textContent = "No pudimos descargar el documento; intenta de nuevo.";
        },
      },
      `Descargar ${kind.toUpperCase()}`,
    ),
    message,
  );
}

export async function documentsPage(params: URLSearchParams): Promise<void> {
  const main = render("Documentos tributarios", h("h1", {}, "Documentos tributarios"));
  const [tLabel, tipo] = filterSelect("Tipo", "f-tipo", params.get("tipo") ?? "", TYPES);
  const [sLabel, status] = filterSelect("Estado SII", "f-estado", params.get("estado") ?? "", DOCUMENT_STATUSES);
  const [fromLabel, from] = filterInput("Desde", "f-desde", { type: "date", value: params.get("desde") ?? "" });
  const [toLabel, to] = filterInput("Hasta", "f-hasta", { type: "date", value: params.get("hasta") ?? "" });
  main.append(
    h("p", {}, h("a", { href: "/admin/verificar" }, "Verificar un DTE recibido")),
    filterForm("/admin/documentos", [["tipo", tipo], ["estado", status], ["desde", from], ["hasta", to]], tLabel, sLabel, fromLabel, toLabel),
  );
  const { data, error, response } = await api.GET("/v1/dte/documents", {
    params: {
      query: {
        tipoDte: oneOf([33, 34, 39, 41, 56, 61] as const, params.get("tipo")),
        status: oneOf(["pending_folio", "numbered", "issued", "submitted", "accepted", "accepted_with_objections", "rejected"] as const, params.get("estado")),
        issuedFrom: dayStart(params.get("desde") ?? ""),
        issuedTo: dayEnd(params.get("hasta") ?? ""),
        pageSize: 50,
        pageToken: params.get("pagina") || undefined,
      },
    },
  });
  if (!data) {
    main.append(alertBox(refused(error, response.status)));
    return;
  }
  const docs = data.documents ?? [];
  main.append(
    docs.length
      ? table(
          "documentos",
          ["Documento", "Folio", "Emitido", "Receptor", "Total", "Estado SII"],
          docs.map((d) => [
            h("a", { href: `/admin/documentos/${d.id}` }, `${tipoDte(d.tipoDte)} (${d.tipoDte})`),
            String(d.folio ?? ""),
            when(d.issuedAt),
            d.receptorRut ?? "",
            money(d.mntTotal),
            documentStatus(d.status),
          ]),
          [1, 4],
        )
      : h("p", {}, "No hay documentos que coincidan."),
    pager(data.nextPageToken, params),
  );
}

export async function documentPage(_params: URLSearchParams, id: string): Promise<void> {
  const { data: d, error, response } = await api.GET("/v1/dte/documents/{id}", { params: { path: { id } } });
  if (!d) {
    render("Documento", h("h1", {}, "Documento"), alertBox(refused(error, response.status)));
    return;
  }
  const referenced = d.referencesDocumentId
    ? (await api.GET("/v1/dte/documents/{id}", { params: { path: { id: d.referencesDocumentId } } })).data
    : undefined;
  const row = (term: string, value: Node | string) => [h("dt", {}, term), h("dd", {}, value)];
  render(
    `${tipoDte(d.tipoDte)} ${d.folio}`,
    h("p", {}, h("a", { href: "/admin/documentos" }, "← Documentos")),
    h("h1", {}, `${tipoDte(d.tipoDte)} (${d.tipoDte}) N° ${d.folio}`),
    h(
      "dl",
      { class: "details" },
      ...row("Estado SII", documentStatus(d.status)),
      ...row("Track id del SII", d.trackId || "aún sin envío"),
      ...row("Detalle del SII", d.siiStatusDetail || "—"),
      ...row("Emitido", when(d.issuedAt) || "—"),
      ...row("Receptor", d.receptorRut ?? ""),
      ...row("Neto", money(d.mntNeto)),
      ...row("Exento", money(d.mntExe)),
      ...row("IVA", money(d.iva)),
      ...row("Total", money(d.mntTotal)),
      ...row("Pedido", h("a", { href: `/admin/pedidos/${d.orderId}` }, (d.orderId ?? "").slice(-12))),
      ...(d.referencesDocumentId
        ? row(
            "Referencia",
            h(
              "a",
              { href: `/admin/documentos/${d.referencesDocumentId}` },
              referenced ? `${tipoDte(referenced.tipoDte)} N° ${referenced.folio}` : "documento referenciado",
            ),
          )
        : []),
    ),
    h("p", { class: "actions" }, downloadButton(id, d.tipoDte, d.folio, "xml"), " ", downloadButton(id, d.tipoDte, d.folio, "pdf")),
  );
}

export async function verifyPage(): Promise<void> {
  const outcome = h("div", { id: "informe", "aria-live": "polite" });
  const { form } = xmlFileForm("dte", "Archivo XML", "Elige un archivo XML.", "Verificar", async (file) => {
    outcome.replaceChildren();
    const { data, error: problem, response } = await api.POST("/v1/dte/verify", rawXml(file));
    if (!data) {
      const detail = (problem as { detail?: string } | undefined)?.detail;
      outcome.replaceChildren(alertBox(response.status === 400 ? `El archivo no se pudo leer como DTE${detail ? `: ${detail}` : "."}` : refused(problem, response.status)));
      return;
    }
    const failing = (data.documents ?? []).flatMap((d) =>
      ([["esquema", d.schema], ["firma", d.signature], ["timbre (TED)", d.ted], ["TED vs documento", d.tedConsistency]] as const)
        .filter(([, c]) => c?.applicable && !c.passed)
        .map(([name]) => `${name} del folio ${d.folio}`),
    );
    if (data.envelopeSignature?.applicable && !data.envelopeSignature.passed) failing.push("firma del envío");
    outcome.replaceChildren(
      data.valid ? notice(`${file.name}: todas las revisiones pasan.`) : alertBox(`${file.name}: fallan ${failing.join(", ")}.`),
      table(
        "revisiones",
        ["Documento", "Emisor", "Esquema", "Firma", "Timbre (TED)", "TED vs documento"],
        (data.documents ?? []).map((d) => [
          `${tipoDte(d.tipoDte)} (${d.tipoDte}) N° ${d.folio}`,
          d.rutEmisor ?? "",
          checkCell(d.schema),
          checkCell(d.signature),
          checkCell(d.ted),
          checkCell(d.tedConsistency),
        ]),
      ),
      h("p", {}, "Firma del envío: ", checkCell(data.envelopeSignature)),
    );
  });
  render(
    "Verificar un DTE",
    h("h1", {}, "Verificar un DTE recibido"),
    h("p", {}, "Sube el XML de un proveedor (un EnvioDTE, un EnvioBOLETA o un DTE suelto): se revisan el esquema, las firmas, el timbre (TED) y que el timbre coincida con el documento."),
    form,
    outcome,
  );
}
