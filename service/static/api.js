// The public API, called with the key of the API key field when there is one; its errors as
// ApiError (the server's {"error": {status, type, message, request_id}}).

export const KEY_STORE = "dat-serve.api-key";

export class ApiError extends Error {
  constructor(status, type, message, requestId) {
    super(message);
    Object.assign(this, {status, type, requestId});
  }
}

export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, {...options, headers});  // relative: works under a path prefix
  } catch (err) {
    throw new ApiError(0, "network_error", `the server could not be reached (${err.message})`);
  }
  if (response.ok) return response.json();
  let error = {};
  try {
    error = (await response.json()).error || {};  // {"error": {status, type, message, request_id}}
  } catch { /* not our JSON (a proxy's page): the status line says enough */ }
  throw new ApiError(response.status, error.type || response.statusText || "error",
                     error.message || `HTTP ${response.status}`,
                     error.request_id || response.headers.get("X-Request-ID"));
}
