// A tax document's PDF or XML saved by the browser: fetched with the session's token
// (a plain link would carry none), then handed to the browser as a download.
import { api } from "../api/client";
import { h } from "./dom";

/** Downloads document `id` as `name`; false when the API did not give it. */
export async function downloadDocument(id: string, kind: "pdf" | "xml", name: string): Promise<boolean> {
  const { data } =
    kind === "pdf"
      ? await api.GET("/v1/dte/documents/{id}/pdf", { params: { path: { id } }, parseAs: "blob" })
      : await api.GET("/v1/dte/documents/{id}/xml", { params: { path: { id } }, parseAs: "blob" });
  if (!data) return false;
  saveBlob(data as Blob, name);
  return true;
}

/** Hands `blob` to the browser as a download named `name`. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
