// Talking to the service: the same endpoints API users call, and every failure said in
// words (a status code alone tells a reader nothing).

// The service's limits, from /metadata; used to name the body limit in a 413 message.
export const limits = {};

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// A service started with an API key answers 401 without it. The key is asked for once
// and kept in sessionStorage: for this tab only, gone when it closes, never in the markup.
const KEY_ITEM = "article-classifier-api-key";

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch {
    return ""; // storage refused (privacy settings): the key is asked for again
  }
}

// Ask for the key after a 401 sent with `sent`; false when the reader gave none.
function askForKey(sent) {
  if (storedKey() !== sent) return true; // another call was answered meanwhile: retry
  const key = window.prompt(sent ? "That API key was refused. Enter the service's API key:"
    : "This service needs an API key. Enter it (kept for this browser tab only):", "");
  if (!key || !key.trim()) return false;
  try {
    sessionStorage.setItem(KEY_ITEM, key.trim());
  } catch {
    return false;
  }
  return true;
}

// `what` names the thing sent ("article", "file") in the messages.
export async function callApi(path, options = {}) {
  for (;;) {
    const sent = storedKey();
    try {
      return await callOnce(path, { ...options, key: sent });
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401 || !askForKey(sent)) throw err;
    }
  }
}

async function callOnce(path, { method = "GET", json, body, type, what = "request", key } = {}) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) {
    body = JSON.stringify(json);
    headers["Content-Type"] = "application/json";
  } else if (type) {
    headers["Content-Type"] = type;
  }
  const size = body === undefined ? 0 : (typeof body === "string"
    ? new TextEncoder().encode(body).length : body.size);
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (err) {
    // A service that refuses an oversized body may close the connection before the
    // browser has sent it all, and fetch then reports a network error, not the 413.
    if (limits.max_body_bytes && size > limits.max_body_bytes) {
      throw new ApiError(tooLarge(what, size), 413);
    }
    throw new ApiError(`Could not reach the service at ${location.origin} (${err.message}). ` +
      "Is article-classifier serve still running?", 0);
  }
  const text = await response.text();
  let payload = text;
  try {
    payload = JSON.parse(text);
  } catch {
    // not JSON: keep the text for the message
  }
  if (!response.ok) {
    throw new ApiError(describe(response.status, payload, what, size), response.status);
  }
  return payload;
}

function tooLarge(what, size) {
  const limit = limits.max_body_bytes;
  return `The ${what} is larger than the service accepts (${limit ?? "its limit in"} bytes;` +
    ` this one is ${size} bytes). Shorten it, or start the service with a larger ` +
    "--max-body-bytes. (HTTP 413)";
}

// The message a reader sees for an error answer.
export function describe(status, payload, what = "request", size = 0) {
  const detail = detailText(payload);
  if (status === 413) {
    if (!limits.max_body_bytes) {
      const match = /over (\d+) bytes/.exec(detail);
      if (match) limits.max_body_bytes = Number(match[1]);
    }
    return tooLarge(what, size);
  }
  if (status === 422) {
    return `The service could not accept this ${what}: ${detail} (HTTP 422)`;
  }
  if (status === 401) {
    return `The service needs its API key for this: ${detail}. Reload the page to enter ` +
      "it. (HTTP 401)";
  }
  if (status === 503) {
    return `The service is busy or its model is not ready: ${detail}. ` +
      "Try again in a moment. (HTTP 503)";
  }
  return `The service answered with an error: ${detail || "no details"} (HTTP ${status})`;
}

// FastAPI's `detail` is a string, or for validation errors a list of {loc, msg}.
function detailText(payload) {
  const detail = payload && typeof payload === "object" ? payload.detail : payload;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const where = (d.loc || []).filter((part) => part !== "body").join(".");
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return typeof detail === "string" ? detail.trim() : JSON.stringify(detail);
}

// Put a message in a live region (an empty region is invisible; see style.css).
export function say(element, message) {
  element.textContent = message || "";
}
