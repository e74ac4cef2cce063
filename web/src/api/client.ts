// The one way the web front end calls the REST API: openapi-fetch over the types
// generated from the gateway's OpenAPI document (./schema.d.ts, `web/generate-api`), so a
// route, a field or a type that changes in the protos fails the web's type check instead
// of a shopper's request.
import createClient from "openapi-fetch";
import type { paths } from "./schema";

/** The API on the same origin (the gateway serves the web and the API together). */
export const api = createClient<paths>({ baseUrl: "" });
