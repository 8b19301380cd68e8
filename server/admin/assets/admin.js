// connectd admin page. Renders only with textContent (never as HTML), keeps
// the host token in sessionStorage (this tab), and never shows a stored
// secret: the API only says whether a value is set.
"use strict";
(function () {
  var KEY = "connectd.admin.token";
  var $ = function (id) { return document.getElementById(id); };
  var state = { view: null };

  function token() { return sessionStorage.getItem(KEY) || ""; }
  function platform() { return $("platform").value; }
  function authType() {
    var o = $("platform").selectedOptions[0];
    return o ? o.getAttribute("data-auth") : "";
  }
  function say(text, kind) {
    var m = $("message");
    m.textContent = text;
    m.className = kind || "";
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function api(method, path, body) {
    var opts = { method: method, headers: { "X-RC-Access-Token": token() }, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var msg = (data.returnMessage && data.returnMessage.message) || data.message || ("Request failed (" + r.status + ").");
          var err = new Error(msg);
          err.status = r.status;
          throw err;
        }
        return data;
      });
    });
  }
  function q(path) { return path + (path.indexOf("?") < 0 ? "?" : "&") + "platform=" + encodeURIComponent(platform()); }

  function statusCell(v) {
    var set = v && v.hasValue;
    var td = el("td");
    var s = el("span", set ? "set" : "not set", "status " + (set ? "status-set" : "status-unset"));
    td.appendChild(s);
    if (set && v.value) { td.appendChild(el("span", " (" + v.value + ")", "shown-value")); }
    return td;
  }

  function renderFields(v) {
    var tbody = $("account-fields").querySelector("tbody");
    clear(tbody);
    $("no-account-fields").hidden = v.orgFields.length > 0;
    $("account-fields").hidden = v.orgFields.length === 0;
    v.orgFields.forEach(function (f) {
      var tr = el("tr");
      tr.id = "org-" + f.const;
      tr.setAttribute("data-field", f.const);
      var name = el("td");
      name.appendChild(el("span", f.title || f.const));
      name.appendChild(el("small", " " + f.const + (f.required ? " (required)" : "")));
      tr.appendChild(name);
      tr.appendChild(statusCell(v.orgValues[f.const]));
      var inTd = el("td");
      var input = el("input");
      input.id = "value-" + f.const;
      input.type = f.secret ? "password" : "text";
      input.autocomplete = "off";
      input.setAttribute("aria-label", "New value for " + (f.title || f.const));
      inTd.appendChild(input);
      if (f.managedFieldType === "dynamic") {
        var sel = el("select");
        sel.id = "options-" + f.const;
        sel.hidden = true;
        var load = el("button", "Load options");
        load.type = "button";
        load.addEventListener("click", function () { loadOptions(f.const, sel, input); });
        sel.addEventListener("change", function () { input.value = sel.value; });
        inTd.appendChild(sel);
        inTd.appendChild(load);
      }
      tr.appendChild(inTd);
      var act = el("td");
      var setB = el("button", "Set");
      setB.type = "button";
      setB.id = "set-" + f.const;
      setB.addEventListener("click", function () {
        if (!input.value) { say("Enter a value first.", "error"); return; }
        var values = {};
        values[f.const] = input.value;
        save({ scope: "org", values: values }, function () { input.value = ""; });
      });
      var clrB = el("button", "Clear");
      clrB.type = "button";
      clrB.id = "clear-" + f.const;
      clrB.addEventListener("click", function () { save({ scope: "org", fieldsToRemove: [f.const] }); });
      act.appendChild(setB);
      act.appendChild(clrB);
      tr.appendChild(act);
      tbody.appendChild(tr);
    });

    $("no-user-fields").hidden = v.userFields.length > 0;
    $("user-fields-block").hidden = v.userFields.length === 0;
    var head = $("user-values").querySelector("thead tr");
    while (head.children.length > 2) { head.removeChild(head.lastChild); }
    var fsel = $("user-field");
    clear(fsel);
    v.userFields.forEach(function (f) {
      head.appendChild(el("th", f.title || f.const));
      var o = el("option", f.title || f.const);
      o.value = f.const;
      fsel.appendChild(o);
    });
    var ub = $("user-values").querySelector("tbody");
    clear(ub);
    v.userValues.forEach(function (u) {
      var tr = el("tr");
      tr.id = "user-" + u.rcExtensionId;
      tr.appendChild(el("td", u.rcExtensionId));
      tr.appendChild(el("td", u.rcUserName || ""));
      v.userFields.forEach(function (f) { tr.appendChild(statusCell(u.fields[f.const])); });
      ub.appendChild(tr);
    });
    $("fields-section").hidden = false;
  }

  function loadOptions(fieldConst, sel, input) {
    api("POST", "/admin/managedAuth/options", { platform: platform(), fieldConst: fieldConst }).then(function (r) {
      clear(sel);
      (r.options || []).forEach(function (o) {
        var opt = el("option", o.label || o.value);
        opt.value = o.value;
        sel.appendChild(opt);
      });
      sel.hidden = false;
      if (sel.value) { input.value = sel.value; }
    }).catch(function (e) { say(e.message, "error"); });
  }

  function save(body, done) {
    body.platform = platform();
    api("POST", "/admin/managedAuth", body).then(function () {
      if (done) { done(); }
      say("Saved.", "ok");
      return refresh();
    }).catch(function (e) { say(e.message, "error"); });
  }

  function appText(a) {
    if (!a) { return "none"; }
    var parts = ["client id " + a.clientId, "secret " + (a.clientSecret && a.clientSecret.hasValue ? "set" : "not set"), "token URL " + a.accessTokenUri];
    if (a.authorizationUri) { parts.push("authorization URL " + a.authorizationUri); }
    if (a.hostname) { parts.push("hostname " + a.hostname); }
    if (a.scopes) { parts.push("scopes " + a.scopes); }
    if (a.expiresAt) { parts.push("expires " + a.expiresAt); }
    return parts.join(", ");
  }

  function renderOAuth(st) {
    $("oauth-active").textContent = appText(st.oauthValues);
    $("oauth-pending").textContent = appText(st.pendingValues);
    $("oauth-section").hidden = false;
  }

  function renderAudit(r) {
    var tb = $("audit").querySelector("tbody");
    clear(tb);
    (r.events || []).forEach(function (e) {
      var tr = el("tr");
      tr.appendChild(el("td", e.at));
      tr.appendChild(el("td", e.userId));
      tr.appendChild(el("td", e.action));
      tr.appendChild(el("td", e.target));
      tr.appendChild(el("td", (e.fields || []).join(", ")));
      tb.appendChild(tr);
    });
    $("audit-section").hidden = false;
  }

  function refresh() {
    if (!token()) { return Promise.resolve(); }
    var jobs = [api("GET", q("/admin/managedAuth")).then(function (v) { state.view = v; renderFields(v); })];
    if (authType() === "oauth") {
      jobs.push(api("GET", q("/oauthManagedAuthState")).then(renderOAuth));
    } else {
      $("oauth-section").hidden = true;
    }
    jobs.push(api("GET", q("/admin/audit?limit=20")).then(renderAudit));
    return Promise.all(jobs).then(function () {
      $("signout").hidden = false;
      document.body.setAttribute("data-ready", "true");
    }).catch(function (e) {
      document.body.setAttribute("data-ready", "error");
      say(e.message, "error");
      if (e.status === 401) { sessionStorage.removeItem(KEY); }
    });
  }

  function init() {
    $("signin-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var t = $("token").value.trim();
      if (!t) { return; }
      sessionStorage.setItem(KEY, t);
      $("token").value = "";
      say("Signed in.", "ok");
      refresh();
    });
    $("signout").addEventListener("click", function () {
      sessionStorage.removeItem(KEY);
      location.reload();
    });
    $("platform").addEventListener("change", function () { say(""); refresh(); });
    $("user-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var values = {};
      if (!$("user-value").value) { say("Enter a value first.", "error"); return; }
      values[$("user-field").value] = $("user-value").value;
      save({ scope: "user", rcExtensionId: $("user-ext").value, rcUserName: $("user-name").value, values: values },
        function () { $("user-value").value = ""; });
    });
    $("user-clear").addEventListener("click", function () {
      save({ scope: "user", rcExtensionId: $("user-ext").value, fieldsToRemove: [$("user-field").value] });
    });
    $("oauth-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var values = {};
      ["clientId", "clientSecret", "accessTokenUri", "authorizationUri", "redirectUri", "scopes", "hostname"].forEach(function (k) {
        values[k] = $("oauth-" + k).value;
      });
      api("POST", "/admin/managedOAuth/cache", { platform: platform(), values: values }).then(function () {
        $("oauth-clientSecret").value = "";
        say("OAuth app saved as pending. It becomes active after a successful login.", "ok");
        return refresh();
      }).catch(function (e) { say(e.message, "error"); });
    });
    $("oauth-delete-pending").addEventListener("click", function () {
      api("DELETE", q("/admin/managedOAuth/cache")).then(function () { say("Pending app deleted.", "ok"); return refresh(); })
        .catch(function (e) { say(e.message, "error"); });
    });
    $("oauth-delete-active").addEventListener("click", function () {
      if (!window.confirm("Delete the active OAuth app? Users who connected with it must connect again.")) { return; }
      api("DELETE", q("/admin/managedOAuth/account")).then(function () { say("Active app deleted.", "ok"); return refresh(); })
        .catch(function (e) { say(e.message, "error"); });
    });
    if (token()) { refresh(); } else { document.body.setAttribute("data-ready", "signed-out"); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
