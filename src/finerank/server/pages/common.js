// Shared by the search and evaluation pages: API calls with the key, small DOM helpers.
"use strict";

const KEY = "finerank-api-key";

// Builds an element: el("div", {class: "x", onclick: f}, child, "text", ...).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// "zh" for text that is mostly Chinese (so the browser picks a CJK font), else "en".
function langOf(text) {
  const cjk = (text.match(/[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/g) || []).length;
  const letters = (text.match(/\p{L}/gu) || []).length;
  return cjk && cjk >= 0.2 * letters ? "zh" : "en";
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

let asking = null; // the one open key prompt, shared by every request that needs the key

// Asks for the API key in the page's key form; resolves when one is entered. A key is sent in an
// HTTP header, so it must be printable ASCII.
function askForKey(message) {
  if (asking) return asking;
  const form = document.getElementById("key-form");
  const label = document.getElementById("key-message");
  form.hidden = false;
  label.textContent = message;
  const input = document.getElementById("key");
  input.focus();
  asking = new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      if (!/^[\x21-\x7e]+$/.test(input.value)) {
        label.textContent = "A key is printable ASCII without spaces; enter it again.";
        return;
      }
      sessionStorage.setItem(KEY, input.value);
      form.hidden = true;
      asking = null;
      resolve();
    };
  });
  return asking;
}

let keyReady = null;

// fetch() of a JSON API route with the bearer key. A server that needs a key says so in /health:
// the key is asked for before the first call, and again after a 401.
async function api(path, body) {
  keyReady = keyReady || fetch("/health").then((r) => r.json()).then((health) => {
    if (health.api_key_required && !sessionStorage.getItem(KEY)) return askForKey("This server needs an API key.");
  }).catch((error) => {
    keyReady = null; // a server that was down is asked again next time
    throw error;
  });
  await keyReady;
  for (;;) {
    const headers = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = "Bearer " + key;
    const response = await fetch(path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
    if (response.status === 401) {
      await askForKey(key ? "That key was refused; enter the server's API key." : "This server needs an API key.");
      continue;
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error((data && (data.message || data.detail)) || response.statusText);
    return data;
  }
}

function showError(error) {
  const status = document.getElementById("status");
  status.textContent = "Error: " + error.message;
  status.className = "status error";
}
