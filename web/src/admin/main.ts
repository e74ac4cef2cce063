// The back-office at /admin: dashboard, products, orders (events, payments, refunds,
// documents), tax documents, CAFs, suppliers' documents (purchases), verification of
// received DTEs, users. The admin role is
// checked by the API on every call; the page only follows what it answers.
import { api } from "../api/client";
import { alertBox, field, h, render } from "../store/dom";
import { spanish } from "../store/format";
import * as session from "../store/session";
import { cafsPage } from "./cafs";
import { go, router } from "./common";
import { dashboardPage } from "./dashboard";
import { deadLettersPage } from "./deadletters";
import { documentPage, documentsPage, verifyPage } from "./documents";
import { orderPage, ordersPage } from "./orders";
import { productPage, productsPage } from "./products";
import { purchasePage, purchasesPage } from "./purchases";
import { usersPage } from "./users";

type Page = (params: URLSearchParams, ...parts: string[]) => Promise<void>;

const pages: [RegExp, Page][] = [
  [/^\/admin\/?$/, dashboardPage],
  [/^\/admin\/resumen$/, dashboardPage],
  [/^\/admin\/productos$/, productsPage],
  [/^\/admin\/productos\/([^/]+)$/, productPage],
  [/^\/admin\/pedidos$/, ordersPage],
  [/^\/admin\/pedidos\/([^/]+)$/, orderPage],
  [/^\/admin\/documentos$/, documentsPage],
  [/^\/admin\/documentos\/([^/]+)$/, documentPage],
  [/^\/admin\/folios$/, cafsPage],
  [/^\/admin\/verificar$/, verifyPage],
  [/^\/admin\/compras$/, purchasesPage],
  [/^\/admin\/compras\/([^/]+)$/, purchasePage],
  [/^\/admin\/usuarios$/, usersPage],
  [/^\/admin\/mensajes$/, deadLettersPage],
];

document.addEventListener("click", (event) => {
  const link = (event.target as Element).closest?.("a");
  if (!link || link.target || link.hasAttribute("download") || event.button !== 0) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/admin")) return;
  event.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => void route());

/** Whether the page shown belongs to the section at `href` (the dashboard is /admin too). */
function current(href: string): boolean {
  const path = location.pathname.replace(/\/$/, "");
  return path === href || path.startsWith(`${href}/`) || (href === "/admin/resumen" && path === "/admin");
}

function nav(admin: boolean): void {
  const items = admin
    ? [
        ...[
          ["/admin/resumen", "Resumen"],
          ["/admin/productos", "Productos"],
          ["/admin/pedidos", "Pedidos"],
          ["/admin/documentos", "Documentos"],
          ["/admin/folios", "Folios"],
          ["/admin/compras", "Compras"],
          ["/admin/verificar", "Verificar DTE"],
          ["/admin/usuarios", "Usuarios"],
          ["/admin/mensajes", "Mensajes"],
        ].map(([href, text]) =>
          h("li", {}, h("a", { href, "aria-current": current(href) ? "page" : undefined }, text)),
        ),
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

router.route = route;

async function start(): Promise<void> {
  await session.restore();
  await route();
}
void start();
