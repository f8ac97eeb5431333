// Solves a bot-check challenge (ALTCHA, protocol v2, PBKDF2 with a
// counter): derives keys from the nonce followed by the counter (4 bytes,
// big-endian), counting up from 0, until one starts with the challenge's
// key prefix; then posts back the payload the server checks (base64 JSON of
// the challenge and its solution). Uses the browser's WebCrypto only.
"use strict";

var HASHES = { "PBKDF2/SHA-256": "SHA-256", "PBKDF2/SHA-384": "SHA-384", "PBKDF2/SHA-512": "SHA-512" };

function bytes(hex) {
  var out = new Uint8Array(hex.length / 2);
  for (var i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function hex(buffer) {
  return Array.prototype.map.call(new Uint8Array(buffer), function (b) { return b.toString(16).padStart(2, "0"); }).join("");
}

async function solve(challenge) {
  var p = challenge.parameters;
  var hash = HASHES[String(p.algorithm).toUpperCase()];
  if (!hash) throw new Error("unsupported algorithm " + p.algorithm);
  var nonce = bytes(p.nonce), salt = bytes(p.salt), prefix = String(p.keyPrefix).toLowerCase();
  var password = new Uint8Array(nonce.length + 4);
  password.set(nonce);
  var counterAt = new DataView(password.buffer, nonce.length, 4);
  var started = Date.now();
  for (var counter = 0; counter <= 0xffffffff; counter++) {
    counterAt.setUint32(0, counter, false);
    var key = await crypto.subtle.importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
    var bits = await crypto.subtle.deriveBits(
      { name: "PBKDF2", hash: hash, salt: salt, iterations: p.cost }, key, p.keyLength * 8);
    var derived = hex(bits);
    if (derived.startsWith(prefix)) {
      return { counter: counter, derivedKey: derived, time: Date.now() - started };
    }
  }
  throw new Error("no solution");
}

self.onmessage = async function (event) {
  try {
    var response = await fetch(event.data.url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("challenge: HTTP " + response.status);
    var challenge = await response.json();
    var solution = await solve(challenge);
    var payload = btoa(JSON.stringify({ challenge: challenge, solution: solution }));
    self.postMessage({ payload: payload, expiresAt: challenge.parameters.expiresAt });
  } catch (error) {
    self.postMessage({ error: String(error) });
  }
};
