// The signed-in shopper. The access token lives in memory only; the refresh token is in
// an HttpOnly cookie the gateway sets and reads (header `x-token-delivery: cookie`), so no
// script can read a long-lived secret. A reload restores the session from that cookie,
// and the access token is refreshed silently a minute before it expires.
import { api } from "../api/client";
import type { Problem } from "./format";

const COOKIE_DELIVERY = { "x-token-delivery": "cookie" };
/**
 * The body of a refresh or logout by cookie: the contract requires `refreshToken` of JSON
 * clients, and for a `x-token-delivery: cookie` client the gateway puts the HttpOnly
 * cookie's token there (the page never sees it).
 */
const FROM_COOKIE = {} as { refreshToken: string };

let access: string | null = null;
let refreshTimer: number | undefined;
const listeners: (() => void)[] = [];

api.use({
  onRequest({ request }) {
    if (access && !request.headers.has("authorization")) {
      request.headers.set("authorization", `Bearer ${access}`);
    }
    return request;
  },
});

export function signedIn(): boolean {
  return access !== null;
}

export function onChange(listener: () => void): void {
  listeners.push(listener);
}

// Whether this browser holds a refresh cookie (a flag, not a secret: the cookie itself
// is HttpOnly), so a visitor who never signed in is not sent to a refresh that must fail.
const HAS_SESSION = "orderflow.session";

function adopt(token: string | undefined, expiresIn: number | undefined): void {
  access = token ?? null;
  if (access) localStorage.setItem(HAS_SESSION, "1");
  else localStorage.removeItem(HAS_SESSION);
  window.clearTimeout(refreshTimer);
  if (access && expiresIn) {
    const refreshIn = Math.max(5, expiresIn - 60) * 1000;
    refreshTimer = window.setTimeout(() => void restore(), refreshIn);
  }
  for (const listener of listeners) listener();
}

/** Signs in; the problem on refusal. */
export async function signIn(email: string, password: string): Promise<Problem | null> {
  const { data, error, response } = await api.POST("/v1/auth/login", {
    body: { email, password },
    headers: COOKIE_DELIVERY,
  });
  if (!data) return { ...(error as Problem), status: response.status };
  adopt(data.accessToken, data.expiresIn);
  return null;
}

/** Creates an account (then sign in); the problem on refusal. */
export async function register(email: string, password: string): Promise<Problem | null> {
  const { data, error, response } = await api.POST("/v1/auth/register", { body: { email, password } });
  if (!data) return { ...(error as Problem), status: response.status };
  return signIn(email, password);
}

/** Trades the refresh cookie for a new access token; false when there is no session. */
export async function restore(): Promise<boolean> {
  if (!localStorage.getItem(HAS_SESSION)) return false;
  try {
    const { data } = await api.POST("/v1/auth/refresh", { body: FROM_COOKIE, headers: COOKIE_DELIVERY });
    adopt(data?.accessToken, data?.expiresIn);
  } catch {
    adopt(undefined, undefined);
  }
  return signedIn();
}

export async function signOut(): Promise<void> {
  try {
    await api.POST("/v1/auth/logout", { body: FROM_COOKIE, headers: COOKIE_DELIVERY });
  } finally {
    adopt(undefined, undefined);
  }
}
