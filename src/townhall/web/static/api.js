// The HTTP API client: bearer token from localStorage (or a #token= link), JSON in and out.

const KEY = "townhall.token";

/** A refusal from the api, carrying the problem+json body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** Take a token handed over in the link (#token=...) and forget the fragment. */
export function adoptLinkToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

export function token() { return localStorage.getItem(KEY); }
export function setToken(t) { if (t) localStorage.setItem(KEY, t); else localStorage.removeItem(KEY); }

/** Call the api; returns parsed JSON (or null for empty bodies); throws ApiError. */
export async function api(method, path, body, extra = {}) {
  const headers = { ...(extra.headers || {}) };
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (extra.raw) return res;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}
