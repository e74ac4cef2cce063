// Messages a service could not process (dead letters): how many wait in each queue, what
// they are and why; replay them once the cause is fixed, or drop them for good (confirmed).
import { api } from "../api/client";
import { alertBox, h, notice, render } from "../store/dom";
import { refused, table } from "./common";

export async function deadLettersPage(): Promise<void> {
  const main = render("Mensajes sin procesar", h("h1", {}, "Mensajes sin procesar"));
  const outcome = h("div", { "aria-live": "polite" });
  main.append(
    h("p", {}, "Mensajes que un servicio no pudo procesar tras varios intentos. Reintenta cuando la causa esté resuelta; el servicio aplica cada evento una sola vez."),
    outcome,
  );
  const { data, error, response } = await api.GET("/v1/dead-letter-queues");
  if (!data) {
    main.append(alertBox(refused(error, response.status)));
    return;
  }
  const reload = async (message: HTMLElement) => {
    await deadLettersPage();
    document.getElementById("main")?.querySelector("[aria-live]")?.replaceChildren(message);
  };
  for (const q of data.queues ?? []) {
    const queue = q.queue ?? "";
    const id = `cola-${queue.replace(/[^a-z0-9]/gi, "-")}`;
    main.append(h("h2", { id }, `Cola ${queue}: ${q.messages ?? 0} ${q.messages === 1 ? "mensaje" : "mensajes"}`));
    if (!q.messages) continue;
    const listed = await api.GET("/v1/dead-letter-queues/{queue}/messages", { params: { path: { queue } } });
    if (!listed.data) {
      main.append(alertBox(refused(listed.error, listed.response.status)));
      continue;
    }
    const act = async (kind: "replay" | "drop", ids: string[] | null) => {
      if (kind === "drop" && !window.confirm(`¿Descartar ${ids?.length === 1 ? "este mensaje" : "estos mensajes"} para siempre? No se puede deshacer.`)) return;
      const answer =
        kind === "replay"
          ? await api.POST("/v1/dead-letter-queues/{queue}/messages:replay", {
              params: { path: { queue } },
              body: ids ? { ids } : { all: true },
            })
          : await api.POST("/v1/dead-letter-queues/{queue}/messages:drop", { params: { path: { queue } }, body: { ids: ids ?? [] } });
      if (answer.error) {
        await reload(alertBox(answer.response.status === 404 ? "Ese mensaje ya no está en la cola; la lista se actualizó." : refused(answer.error, answer.response.status)));
        return;
      }
      const counted = answer.data as { replayed?: number; dropped?: number };
      const n = (kind === "replay" ? counted.replayed : counted.dropped) ?? 0;
      await reload(notice(kind === "replay" ? `${n} ${n === 1 ? "mensaje reenviado" : "mensajes reenviados"} a la cola ${queue}.` : `${n} ${n === 1 ? "mensaje descartado" : "mensajes descartados"}.`));
    };
    main.append(
      table(
        `${id}-mensajes`,
        ["Evento", "Tipo", "Agregado", "Intentos", "Motivo", "Acciones"],
        (listed.data.messages ?? []).map((m) => [
          m.id ?? "",
          m.eventType || "—",
          m.aggregateId || "—",
          String(m.attempts ?? 0),
          m.reason ?? "",
          h(
            "span",
            {},
            h("button", { type: "button", class: "secondary", onclick: () => void act("replay", [m.id ?? ""]) }, `Reintentar ${m.id}`),
            " ",
            h("button", { type: "button", class: "secondary", onclick: () => void act("drop", [m.id ?? ""]) }, `Descartar ${m.id}`),
          ),
        ]),
        [3],
      ),
      h("p", {}, h("button", { type: "button", onclick: () => void act("replay", null) }, `Reintentar todos los de ${queue}`)),
    );
  }
}
