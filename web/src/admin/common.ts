// What every back-office page shares: navigation inside /admin, refusals in words, paging
// with the API's page tokens, tables, and a raw file sent as a request body.
import { h } from "../store/dom";
import { type Problem, spanish } from "../store/format";

/** Set by main.ts: re-renders the page for the current URL. */
export const router = { route: async (): Promise<void> => {} };

export function go(path: string): void {
  history.pushState(null, "", path);
  void router.route();
}

export function refused(error: unknown, status: number): string {
  return spanish({ ...(error as Problem), status });
}

/** A problem's details joined, to look for what the API said in its own words. */
export function said(error: unknown): string {
  const problem = error as Problem | undefined;
  return [problem?.detail ?? "", ...(problem?.errors ?? []).map((e) => e.detail ?? "")].join(" ");
}

type Cell = Node | string;

/** A table with a header row; `num` columns (by index) align right. */
export function table(id: string, headers: string[], rows: Cell[][], num: number[] = []): HTMLElement {
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, ...headers.map((t, i) => h("th", { class: num.includes(i) ? "num" : undefined, scope: "col" }, t)))),
    h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((c, i) => h("td", { class: num.includes(i) ? "num" : undefined }, c))))),
  );
}

/**
 * Paging with the API's page tokens: the next page is the same URL with `pagina=<token>`;
 * the browser's back button returns to the previous one.
 */
export function pager(nextToken: string | undefined, params: URLSearchParams): HTMLElement {
  const links: HTMLElement[] = [];
  if (params.get("pagina")) {
    const first = new URLSearchParams(params);
    first.delete("pagina");
    links.push(h("a", { href: `${location.pathname}?${first}` }, "Primera página"));
  }
  if (nextToken) {
    const next = new URLSearchParams(params);
    next.set("pagina", nextToken);
    links.push(h("a", { href: `${location.pathname}?${next}`, rel: "next" }, "Página siguiente"));
  }
  return h("nav", { class: "pager", "aria-label": "Páginas" }, ...links);
}

/** `yyyy-mm-dd` (a date input's value) as the instant that day starts, here. */
export function dayStart(day: string): string | undefined {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) return undefined;
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d).toISOString();
}

/** The instant after `yyyy-mm-dd` ends, here (a filter's exclusive upper bound). */
export function dayEnd(day: string): string | undefined {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) return undefined;
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d + 1).toISOString();
}

export function when(instant: string | undefined): string {
  return instant ? new Date(instant).toLocaleString("es-CL") : "";
}

/** A labelled input for a filter form (label above, as the storefront's filters). */
export function filterInput(label: string, id: string, attrs: Record<string, string>): [HTMLElement, HTMLInputElement] {
  const input = h("input", { id, name: id, ...attrs }) as HTMLInputElement;
  return [h("label", { for: id }, label, input), input];
}

export function filterSelect(label: string, id: string, value: string, options: [string, string][]): [HTMLElement, HTMLSelectElement] {
  const select = h("select", { id, name: id }, ...options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))) as HTMLSelectElement;
  return [h("label", { for: id }, label, select), select];
}

/** A filter form whose submit navigates to `path` with the non-empty values as the query. */
export function filterForm(path: string, fields: [string, HTMLInputElement | HTMLSelectElement][], ...children: HTMLElement[]): HTMLElement {
  return h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (e: Event) => {
        e.preventDefault();
        const query = new URLSearchParams();
        for (const [name, input] of fields) if (input.value.trim()) query.set(name, input.value.trim());
        go(query.size ? `${path}?${query}` : path);
      },
    },
    ...children,
    h("button", { type: "submit" }, "Filtrar"),
  );
}

/** openapi-fetch options that send `file` as its bytes: a CAF or a DTE is ISO-8859-1, which
 * reading it as text would alter (and its signatures cover the bytes' characters). */
export function rawXml(file: File) {
  return {
    body: file as unknown as string,
    bodySerializer: (body: unknown) => body as Blob,
    headers: { "content-type": "application/xml" },
  };
}

/**
 * A form with one XML file field (`label`); on submit, `missing` beside the field when no
 * file is chosen, else `send(file, error)`, which shows a refusal in `error`.
 */
export function xmlFileForm(
  name: string,
  label: string,
  missing: string,
  button: string,
  send: (file: File, error: HTMLElement) => Promise<void>,
  heading?: HTMLElement,
): { form: HTMLElement; input: HTMLInputElement } {
  const id = `f-${name}`;
  const input = h("input", { id, name, type: "file", accept: ".xml,application/xml,text/xml", "aria-describedby": `${id}-error` }) as HTMLInputElement;
  const error = h("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "form",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        error.textContent = "";
        const file = input.files?.[0];
        if (!file) {
          error.textContent = missing;
          return;
        }
        await send(file, error);
      },
    },
    heading,
    h("div", { class: "field" }, h("label", { for: id }, label), input, error),
    h("button", { type: "submit" }, button),
  );
  return { form, input };
}

/** A check's outcome in words: passed, failed with the verifier's detail, or not applicable. */
export function checkCell(check: { passed?: boolean; applicable?: boolean; detail?: string } | undefined): HTMLElement {
  if (!check?.applicable) return h("span", { class: "muted" }, "no aplica");
  return check.passed
    ? h("span", { class: "ok" }, "✓ correcta")
    : h("span", { class: "bad" }, "✗ falla", check.detail ? h("br") : null, check.detail ? h("small", {}, check.detail) : null);
}
