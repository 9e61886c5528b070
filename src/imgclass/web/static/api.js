// Calls to the JSON API with the one error shape {"error": {code, message, request_id}}.

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

/** Parse a response; throw ApiError with the server's own message when it is not 2xx. */
export async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page, or a truncated body
  }
  if (response.ok && body !== null) return body;
  const error = body && body.error ? body.error : {};
  const message =
    error.message || `the server answered ${response.status} ${response.statusText || ""}`.trim();
  throw new ApiError(
    response.status,
    error.code || "http_" + response.status,
    message,
    error.request_id || response.headers.get("X-Request-ID"),
  );
}

/** GET path?params with a bearer key; empty parameters are left out. */
export async function getJson(path, params = {}, key = null, signal = undefined) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
  }
  const url = query.size ? `${path}?${query}` : path;
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(url, { headers, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "the server could not be reached", null);
  }
  return readJson(response);
}

export function describe(err) {
  if (err instanceof ApiError) return err.message;
  return String(err && err.message ? err.message : err);
}
