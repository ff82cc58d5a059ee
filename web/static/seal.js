// Sealing in the browser: the value is encrypted here with the cluster's
// public key (WebCrypto) in converge's envelope format
// (docs/design/sealing.md) and never leaves the page.
"use strict";

(function () {
  const form = document.getElementById("seal-form");
  if (!form) return;
  const out = document.getElementById("seal-output");
  const dns = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
  const keyName = /^[-._a-zA-Z0-9]+$/;
  const scopes = { strict: 1, namespace: 2, cluster: 3 };
  const enc = new TextEncoder();

  function label(scope, ns, name) {
    if (scope === "namespace") return "converge.dev/sealed/namespace/" + ns;
    if (scope === "cluster") return "converge.dev/sealed/cluster";
    return "converge.dev/sealed/strict/" + ns + "/" + name;
  }
  const b64 = (bytes) => { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); };
  const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const hexBytes = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));

  async function seal(scope, ns, name, plaintext) {
    const lbl = enc.encode(label(scope, ns, name));
    const pub = await crypto.subtle.importKey("spki", unb64(form.dataset.spki), { name: "RSA-OAEP", hash: "SHA-256" }, false, ["encrypt"]);
    const sessionKey = crypto.getRandomValues(new Uint8Array(32));
    const wrapped = new Uint8Array(await crypto.subtle.encrypt({ name: "RSA-OAEP", label: lbl }, pub, sessionKey));
    const header = new Uint8Array(20);
    header[0] = 1;
    header[1] = scopes[scope];
    header.set(hexBytes(form.dataset.keyId), 2);
    header.set(new Uint8Array(await crypto.subtle.digest("SHA-256", lbl)).slice(0, 8), 10);
    header[18] = wrapped.length >> 8;
    header[19] = wrapped.length & 0xff;
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const aes = await crypto.subtle.importKey("raw", sessionKey, "AES-GCM", false, ["encrypt"]);
    sessionKey.fill(0);
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: header }, aes, plaintext));
    const envelope = new Uint8Array(header.length + wrapped.length + nonce.length + ct.length);
    envelope.set(header, 0);
    envelope.set(wrapped, 20);
    envelope.set(nonce, 20 + wrapped.length);
    envelope.set(ct, 32 + wrapped.length);
    return b64(envelope);
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const field = (id) => document.getElementById("seal-" + id);
    const ns = field("namespace").value.trim(), name = field("name").value.trim(), key = field("key").value.trim();
    const scope = field("scope").value;
    if (!dns.test(ns) || !dns.test(name)) { out.value = "# The namespace and name must be lowercase DNS names."; return; }
    if (!keyName.test(key)) { out.value = "# The key may hold letters, digits, '-', '_' and '.'."; return; }
    const value = enc.encode(field("value").value);
    try {
      const sealed = await seal(scope, ns, name, value);
      value.fill(0);
      field("value").value = "";
      out.value = [
        "apiVersion: converge.dev/v1alpha1",
        "kind: SealedSecret",
        "metadata:",
        "  name: " + name,
        "  namespace: " + ns,
        "spec:",
        ...(scope === "strict" ? [] : ["  scope: " + scope]),
        "  encryptedData:",
        "    " + key + ": " + sealed,
        "",
      ].join("\n");
    } catch (e) {
      out.value = "# Sealing failed in this browser: " + e.message;
    }
  });
})();
