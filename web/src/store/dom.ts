// A few lines of DOM building instead of a UI framework: the storefront is a handful of
// pages, and the first visit must stay small. Text always goes in as text nodes (never
// as HTML), so nothing a server or a shopper sends can become markup.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | EventListener | undefined>;

export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

/**
 * Replaces the page's content. Each page gets a fresh `<main>` (the old one is detached),
 * so what an earlier page appends when its request answers late lands nowhere, instead of
 * in the page the user has moved on to.
 */
export function render(title: string, ...children: Child[]): HTMLElement {
  const old = document.getElementById("main") as HTMLElement;
  const main = old.cloneNode(false) as HTMLElement;
  old.replaceWith(main);
  for (const child of children) {
    if (child) main.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  document.title = `${title} · Tienda orderflow`;
  return main;
}

export function field(
  label: string,
  name: string,
  attrs: Attrs = {},
): { wrap: HTMLElement; input: HTMLInputElement; error: HTMLElement } {
  const id = `f-${name}`;
  const error = h("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  const input = h("input", { id, name, "aria-describedby": `${id}-error`, ...attrs }) as HTMLInputElement;
  // The error is outside the label: it describes the field, it is not its name.
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), input, error);
  return { wrap, input, error };
}

/** A refusal or failure, announced to screen readers at once. */
export function alertBox(text: string): HTMLElement {
  return h("p", { class: "alert", role: "alert" }, text);
}

/** A result, announced politely. */
export function notice(text: string): HTMLElement {
  return h("p", { class: "notice", role: "status" }, text);
}
