// The console's only way to the server: keyledger's public API, with the bearer token the
// person pasted. The token lives in this tab's session storage and nowhere else.

const TOKEN = "keyledger.token";

export class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function signIn(value) {
  sessionStorage.setItem(TOKEN, value.trim());
}

export function signOut() {
  sessionStorage.removeItem(TOKEN);
}

async function request(method, path, body, accept = "application/json") {
  const headers = { authorization: `Bearer ${token()}`, accept };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch { /* an empty body says only the status */ }
    throw new Problem(response.status, problem);
  }
  return response;
}

export async function get(path) {
  return (await request("GET", path)).json();
}

export async function text(path) {
  return (await request("GET", path, undefined, "application/x-ndjson")).text();
}

export async function send(method, path, body) {
  const response = await request(method, path, body);
  return response.status === 204 ? null : response.json();
}

export const org = (id) => `/v1/orgs/${encodeURIComponent(id)}`;
