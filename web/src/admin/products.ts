// Products: search and filter (deactivated ones too), create and edit with the price shown
// as net + IVA = gross while it is typed, set stock, deactivate and reactivate.
import { api } from "../api/client";
import { alertBox, field, h, notice, render } from "../store/dom";
import { type Problem, money, spanish } from "../store/format";
import { filterForm, filterInput, filterSelect, pager, refused, said, table } from "./common";

/** Shows `net` as net + IVA = gross (IVA 0 when exempt) in `preview`, as it is typed. */
function pricePreview(net: HTMLInputElement, exempt: HTMLInputElement, preview: HTMLElement): void {
  const show = () => {
    const n = Math.max(0, Math.round(Number(net.value) || 0));
    const iva = exempt.checked ? 0 : Math.round(n * 0.19);
    preview.textContent = `Neto ${money(n)} + IVA ${money(iva)} = ${money(n + iva)}`;
  };
  net.addEventListener("input", show);
  exempt.addEventListener("change", show);
  show();
}

function checkbox(label: string, name: string, checked: boolean): { wrap: HTMLElement; input: HTMLInputElement } {
  const input = h("input", { id: `f-${name}`, name, type: "checkbox", checked }) as HTMLInputElement;
  return { wrap: h("div", { class: "check" }, input, h("label", { for: `f-${name}` }, label)), input };
}

/** Marks the fields a 400 names; false when it named none of them. */
function markFields(error: unknown, fields: Record<string, { error: HTMLElement }>): boolean {
  let shown = false;
  for (const e of (error as Problem | undefined)?.errors ?? []) {
    const target = fields[e.field ?? ""];
    if (target) {
      target.error.textContent = e.field === "sku" ? "Usa mayúsculas, dígitos y guiones (p. ej. CAFE-1)." : "Revisa este dato.";
      shown = true;
    }
  }
  return shown;
}

export async function productsPage(params: URLSearchParams): Promise<void> {
  const main = render("Productos", h("h1", {}, "Productos"));
  const outcome = h("div", { "aria-live": "polite" });
  const sku = field("SKU", "sku", { required: true });
  const name = field("Nombre", "nombre", { required: true });
  const category = field("Categoría", "categoria");
  const net = field("Precio neto (CLP)", "neto", { type: "number", min: "1", inputmode: "numeric", required: true });
  const exempt = checkbox("Exento de IVA", "exento", false);
  const stock = field("Stock", "stock", { type: "number", min: "0", inputmode: "numeric", value: "0" });
  const preview = h("p", { class: "muted", id: "precio-bruto", "aria-live": "polite" });
  pricePreview(net.input, exempt.input, preview);
  main.append(
    h(
      "form",
      {
        class: "form",
        "aria-labelledby": "nuevo",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          outcome.replaceChildren();
          for (const f of [sku, name, net, stock]) f.error.textContent = "";
          const { data, error, response } = await api.POST("/v1/products", {
            body: {
              sku: sku.input.value.trim(),
              name: name.input.value.trim(),
              category: category.input.value.trim(),
              netPrice: Number(net.input.value),
              exempt: exempt.input.checked,
              onHand: Number(stock.input.value || 0),
            },
          });
          if (!data) {
            if (!markFields(error, { sku, name, netPrice: net, onHand: stock }))
              outcome.replaceChildren(alertBox(response.status === 409 ? "Ya existe un producto con ese SKU." : refused(error, response.status)));
            return;
          }
          outcome.replaceChildren(notice(`Producto ${data.sku} creado.`));
          await listProducts(list, params);
        },
      },
      h("h2", { id: "nuevo" }, "Nuevo producto"),
      sku.wrap,
      name.wrap,
      category.wrap,
      net.wrap,
      exempt.wrap,
      preview,
      stock.wrap,
      h("button", { type: "submit" }, "Crear producto"),
    ),
    outcome,
  );
  const [qLabel, q] = filterInput("Buscar", "q", { type: "search", value: params.get("q") ?? "" });
  const [cLabel, c] = filterInput("Filtrar por categoría", "categoria-filtro", { value: params.get("categoria") ?? "" });
  const [minLabel, min] = filterInput("Precio desde", "desde", { type: "number", min: "0", value: params.get("desde") ?? "" });
  const [maxLabel, max] = filterInput("Precio hasta", "hasta", { type: "number", min: "0", value: params.get("hasta") ?? "" });
  const [sLabel, s] = filterSelect("Estado", "activo", params.get("activo") ?? "", [["", "Todos"], ["si", "Activos"], ["no", "Inactivos"]]);
  const list = h("div", {});
  main.append(
    h("h2", {}, "Catálogo"),
    filterForm("/admin/productos", [["q", q], ["categoria", c], ["desde", min], ["hasta", max], ["activo", s]], qLabel, cLabel, minLabel, maxLabel, sLabel),
    list,
  );
  await listProducts(list, params);
}

async function listProducts(list: HTMLElement, params: URLSearchParams): Promise<void> {
  const price = (key: string) => (params.get(key) ? Number(params.get(key)) : undefined);
  const { data, error, response } = await api.GET("/v1/products", {
    params: {
      query: {
        q: params.get("q") || undefined,
        category: params.get("categoria") || undefined,
        minPrice: price("desde"),
        maxPrice: price("hasta"),
        includeInactive: true,
        pageSize: 50,
        pageToken: params.get("pagina") || undefined,
      },
    },
  });
  if (!data) {
    list.replaceChildren(alertBox(refused(error, response.status)));
    return;
  }
  const wanted = params.get("activo");
  // The API lists active and inactive together; the page narrows to what was asked.
  const products = (data.products ?? []).filter((p) => !wanted || (wanted === "si") === Boolean(p.active));
  list.replaceChildren(
    products.length
      ? table(
          "productos",
          ["SKU", "Nombre", "Neto", "Bruto", "Disponible", "Estado", "Stock"],
          products.map((p) => [
            h("a", { href: `/admin/productos/${encodeURIComponent(p.sku ?? "")}` }, p.sku ?? ""),
            p.name ?? "",
            money(p.netPrice),
            money(p.grossPrice),
            String(p.available ?? 0),
            p.active ? "activo" : "inactivo",
            stockForm(p.sku ?? "", p.name ?? "", p.onHand ?? 0),
          ]),
          [2, 3, 4],
        )
      : h("p", {}, "No hay productos que coincidan."),
    pager(data.nextPageToken, params),
  );
}

/** Sets a product's stock; the API's "reserved by unpaid orders" refusal is put in words. */
function stockForm(sku: string, name: string, onHand: number): HTMLElement {
  const id = `stock-${sku}`;
  const input = h("input", { id, type: "number", min: "0", value: String(onHand) }) as HTMLInputElement;
  const message = h("span", { class: "field-error", "aria-live": "polite" });
  return h(
    "form",
    {
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const { error, response } = await api.PUT("/v1/products/{sku}/stock", {
          params: { path: { sku } },
          body: { onHand: Number(input.value) },
        });
        const reserved = /(\d+) units are reserved/.exec(said(error));
        message.textContent = !error
          ? "Guardado."
          : reserved
            ? `No se puede: ${reserved[1] === "1" ? "hay 1 unidad reservada" : `hay ${reserved[1]} unidades reservadas`} por pedidos sin pagar; el stock no puede quedar bajo eso.`
            : response.status === 400
              ? "Ingresa un stock de 0 o más unidades."
              : refused(error, response.status);
      },
    },
    h("label", { for: id, class: "sr-only" }, `Stock de ${name}`),
    input,
    h("button", { type: "submit", class: "secondary" }, "Guardar"),
    message,
  );
}

export async function productPage(_params: URLSearchParams, sku: string): Promise<void> {
  const { data: p, error, response } = await api.GET("/v1/products/{sku}", { params: { path: { sku } } });
  if (!p) {
    render("Producto", h("h1", {}, "Producto"), alertBox(response.status === 404 ? "No existe un producto con ese SKU." : refused(error, response.status)));
    return;
  }
  const outcome = h("div", { "aria-live": "polite" });
  const name = field("Nombre", "nombre", { required: true, value: p.name ?? "" });
  const description = field("Descripción", "descripcion", { value: p.description ?? "" });
  const category = field("Categoría", "categoria", { value: p.category ?? "" });
  const net = field("Precio neto (CLP)", "neto", { type: "number", min: "1", inputmode: "numeric", required: true, value: String(p.netPrice ?? 0) });
  const exempt = checkbox("Exento de IVA", "exento", Boolean(p.exempt));
  const preview = h("p", { class: "muted", id: "precio-bruto", "aria-live": "polite" });
  pricePreview(net.input, exempt.input, preview);
  const reload = async (message: string) => {
    await productPage(_params, sku);
    document.getElementById("main")?.prepend(notice(message));
  };
  render(
    `Producto ${sku}`,
    h("p", {}, h("a", { href: "/admin/productos" }, "← Productos")),
    h("h1", {}, `${p.name} (${p.sku})`),
    h("p", {}, "Estado: ", h("strong", {}, p.active ? "activo" : "inactivo"), ` · Stock ${p.onHand ?? 0} · Disponible ${p.available ?? 0}`),
    h(
      "form",
      {
        class: "form",
        "aria-labelledby": "editar",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          outcome.replaceChildren();
          for (const f of [name, description, category, net]) f.error.textContent = "";
          const { data, error, response } = await api.PATCH("/v1/products/{sku}", {
            params: { path: { sku } },
            body: {
              name: name.input.value.trim(),
              description: description.input.value.trim(),
              category: category.input.value.trim(),
              netPrice: Number(net.input.value),
              exempt: exempt.input.checked,
            },
          });
          if (!data) {
            if (!markFields(error, { name, description, category, netPrice: net })) outcome.replaceChildren(alertBox(refused(error, response.status)));
            return;
          }
          await reload(`Producto ${sku} guardado.`);
        },
      },
      h("h2", { id: "editar" }, "Editar"),
      name.wrap,
      description.wrap,
      category.wrap,
      net.wrap,
      exempt.wrap,
      preview,
      h("button", { type: "submit" }, "Guardar cambios"),
    ),
    outcome,
    h("h2", {}, "Stock"),
    stockForm(sku, p.name ?? "", p.onHand ?? 0),
    h("h2", {}, p.active ? "Desactivar" : "Reactivar"),
    h("p", { class: "muted" }, p.active ? "Un producto desactivado deja de venderse; los pedidos y documentos que lo nombran no cambian." : "Vuelve a venderse en la tienda."),
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: async () => {
          if (p.active && !window.confirm(`¿Desactivar ${p.name}? Dejará de venderse.`)) return;
          const { error, response } = p.active
            ? await api.DELETE("/v1/products/{sku}", { params: { path: { sku } } })
            : await api.PATCH("/v1/products/{sku}", { params: { path: { sku } }, body: { active: true } });
          if (error) {
            outcome.replaceChildren(alertBox(spanish({ ...(error as Problem), status: response.status })));
            return;
          }
          await reload(p.active ? `Producto ${sku} desactivado.` : `Producto ${sku} reactivado.`);
        },
      },
      p.active ? "Desactivar producto" : "Reactivar producto",
    ),
  );
}
