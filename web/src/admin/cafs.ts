// CAFs (the SII's folio authorisations): upload one, with the API's refusal naming the
// element put in words; the ranges per type with the folios used and left.
import { api } from "../api/client";
import { alertBox, h, notice, render } from "../store/dom";
import { type Problem, tipoDte } from "../store/format";
import { rawXml, refused, table, when, xmlFileForm } from "./common";

/** What a refused CAF's element means, in words (the element's name is shown too). */
const CAF_ELEMENTS: Record<string, string> = {
  "DA/RE": "el CAF es de otra empresa: su RUT emisor no es el de la tienda",
  "DA/RNG": "sus folios se superponen con un rango ya cargado",
  "DA/TD": "el tipo de documento no es uno que la tienda emita",
  "DA/FA": "la fecha de autorización no es válida",
  "DA/RSAPK": "la clave pública del CAF no es válida",
  "DA/IDK": "falta el identificador de la clave del SII",
  RSASK: "la clave privada del CAF no es válida o no corresponde a su clave pública",
  RSAPUBK: "la clave pública del CAF no es válida",
  FRMA: "la firma del SII sobre el CAF no es válida",
  XML: "el archivo no es XML bien formado",
  CAF: "el archivo no contiene un CAF",
  AUTORIZACION: "el archivo no contiene una AUTORIZACION del SII",
  DA: "faltan los datos de autorización (DA)",
  body: "el archivo está vacío",
};

export function cafRefusal(problem: Problem): string {
  const named = problem.errors?.[0]?.field ?? "";
  if (problem.status === 400 && named) {
    return `El SII no aceptaría este CAF (${named}): ${CAF_ELEMENTS[named] ?? "el elemento no es válido"}.`;
  }
  return refused(problem, problem.status ?? 0);
}

export async function cafsPage(): Promise<void> {
  const outcome = h("div", { "aria-live": "polite" });
  const ranges = h("div", {});
  const { form, input } = xmlFileForm(
    "caf",
    "Archivo CAF (XML del SII)",
    "Elige el archivo CAF que entregó el SII.",
    "Cargar CAF",
    async (file, error) => {
      outcome.replaceChildren();
      const { data, error: problem, response } = await api.POST("/v1/dte/cafs", rawXml(file));
      if (!data) {
        error.textContent = cafRefusal({ ...(problem as Problem), status: response.status });
        await listCafs(ranges);
        return;
      }
      input.value = "";
      outcome.replaceChildren(notice(`CAF cargado: ${tipoDte(data.tipoDte)} (${data.tipoDte}), folios ${data.folioFrom} a ${data.folioTo}.`));
      await listCafs(ranges);
    },
    h("h2", {}, "Cargar un CAF"),
  );
  render(
    "Folios (CAF)",
    h("h1", {}, "Folios (CAF)"),
    form,
    outcome,
    h("h2", {}, "Folios cargados"),
    ranges,
  );
  await listCafs(ranges);
}

async function listCafs(target: HTMLElement): Promise<void> {
  const { data, error, response } = await api.GET("/v1/dte/cafs");
  if (!data) {
    target.replaceChildren(alertBox(refused(error, response.status)));
    return;
  }
  target.replaceChildren(
    h("h3", {}, "Por tipo de documento"),
    table(
      "folios",
      ["Tipo", "Folios restantes", "Aviso"],
      (data.folios ?? []).map((f) => [
        `${tipoDte(f.tipoDte)} (${f.tipoDte})`,
        String(f.remaining ?? 0),
        f.low ? h("strong", { class: "bad" }, "Quedan pocos: pide un CAF nuevo al SII") : "",
      ]),
      [1],
    ),
    h("h3", {}, "Cada CAF"),
    table(
      "cafs",
      ["Tipo", "Desde", "Hasta", "Usados", "Restantes", "Autorizado", "Cargado"],
      (data.cafs ?? []).map((c) => [
        `${tipoDte(c.tipoDte)} (${c.tipoDte})`,
        String(c.folioFrom ?? ""),
        String(c.folioTo ?? ""),
        String(c.used ?? 0),
        String(c.remaining ?? 0),
        c.fechaAutorizacion ?? "",
        when(c.uploadedAt),
      ]),
      [1, 2, 3, 4],
    ),
  );
}
