// Users: a paged list with their roles; grant or revoke the admin role (revoking asks for
// confirmation; the API's refusal to revoke the last admin is put in words).
import { api } from "../api/client";
import { alertBox, h, notice, render } from "../store/dom";
import { pager, refused, said, table, when } from "./common";

export async function usersPage(params: URLSearchParams): Promise<void> {
  const main = render("Usuarios", h("h1", {}, "Usuarios"));
  const outcome = h("div", { "aria-live": "polite" });
  main.append(outcome);
  const { data, error, response } = await api.GET("/v1/users", {
    params: { query: { pageSize: 50, pageToken: params.get("pagina") || undefined } },
  });
  if (!data) {
    main.append(alertBox(refused(error, response.status)));
    return;
  }
  const reload = async (message: HTMLElement) => {
    await usersPage(params);
    document.getElementById("main")?.querySelector("[aria-live]")?.replaceChildren(message);
  };
  main.append(
    table(
      "usuarios",
      ["Correo", "Roles", "Desde", "Pedidos", "Administración"],
      (data.users ?? []).map((u) => {
        const admin = (u.roles ?? []).includes("admin");
        return [
          u.email ?? "",
          (u.roles ?? []).join(", "),
          when(u.createdAt),
          h("a", { href: `/admin/pedidos?cliente=${encodeURIComponent(u.id ?? "")}` }, `Pedidos de ${u.email}`),
          h(
            "button",
            {
              type: "button",
              class: "secondary",
              onclick: async () => {
                if (admin && !window.confirm(`¿Quitar el rol de administración a ${u.email}?`)) return;
                const { error, response } = admin
                  ? await api.DELETE("/v1/users/{id}/roles/{role}", { params: { path: { id: u.id ?? "", role: "admin" } } })
                  : await api.POST("/v1/users/{id}/roles", { params: { path: { id: u.id ?? "" } }, body: { role: "admin" } });
                if (error) {
                  await reload(
                    alertBox(
                      /last admin/.test(said(error))
                        ? `No se puede quitar el rol a ${u.email}: es el último administrador y la tienda se quedaría sin nadie que la administre.`
                        : refused(error, response.status),
                    ),
                  );
                  return;
                }
                await reload(notice(admin ? `${u.email} ya no administra la tienda.` : `${u.email} ahora administra la tienda.`));
              },
            },
            admin ? `Quitar admin a ${u.email}` : `Hacer admin a ${u.email}`,
          ),
        ];
      }),
    ),
    pager(data.nextPageToken, params),
  );
}
