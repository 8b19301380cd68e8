// connectd console: actions on the server-rendered page. Every call is a
// same-origin JSON POST; nothing secret ever reaches this script.
"use strict";

(function () {
  const message = document.getElementById("message");

  function say(el, text, ok) {
    el.textContent = text || "";
    el.classList.toggle("fail", ok === false);
  }

  async function call(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {}; }
    if (!resp.ok) {
      throw new Error(data.message || ("HTTP " + resp.status));
    }
    return data;
  }

  function formatIn(ms) {
    if (!ms) return "";
    let s = Math.round((ms - Date.now()) / 1000);
    if (s <= 0) return "(expired)";
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return "(in " + (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s)";
  }

  function tick() {
    document.querySelectorAll("[data-field=tokenExpiry]").forEach(function (el) {
      const ms = Number(el.dataset.expiryMs || 0);
      const out = el.parentElement.querySelector("[data-field=expiresIn]");
      if (out) out.textContent = formatIn(ms);
    });
  }

  function show(card, v) {
    const set = function (name, text) {
      const el = card.querySelector("[data-field=" + name + "]");
      if (el) el.textContent = text;
    };
    set("user", v.user);
    set("crmUserId", v.crmUserId);
    set("status", v.status);
    set("credentialVersion", String(v.credentialVersion));
    set("hasRefreshToken", v.hasRefreshToken ? "held (sealed)" : "none");
    set("sessionExpires", v.sessionExpires);
    const exp = card.querySelector("[data-field=tokenExpiry]");
    if (exp) {
      exp.textContent = v.tokenExpiry || "never (API key)";
      exp.dataset.expiryMs = String(v.tokenExpiryMs || 0);
    }
    tick();
  }

  function cardOf(id) {
    return document.querySelector('article.session[data-session="' + CSS.escape(id) + '"]');
  }

  async function act(button) {
    const action = button.dataset.action;
    button.disabled = true;
    try {
      if (action === "login") {
        say(message, "Starting the login...");
        const data = await call("/console/api/login", { platform: button.dataset.platform });
        window.location.assign(data.url);
        return;
      }
      const id = button.dataset.session;
      const card = cardOf(id);
      const result = card ? card.querySelector("[data-field=result]") : message;
      try {
        const data = await call("/console/api/" + action, { session: id });
        if (action === "logout") {
          if (card) card.remove();
          say(message, data.result.message, true);
          const none = document.getElementById("no-sessions");
          if (none && !document.querySelector("article.session")) none.hidden = false;
          return;
        }
        show(card, data.session);
        say(result, data.result.message, data.result.successful);
      } catch (err) {
        say(result, err.message, false);
      }
    } catch (err) {
      say(message, err.message, false);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", function (ev) {
    const b = ev.target.closest("button[data-action]");
    if (b) {
      ev.preventDefault();
      act(b);
    }
  });
  tick();
  setInterval(tick, 1000);
  document.body.dataset.ready = "true";
})();
