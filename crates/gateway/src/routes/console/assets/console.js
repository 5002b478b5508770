// MeshGuard console: the live parts. No inline script anywhere (the Content-Security-Policy
// allows scripts from this file only); every text that comes from the gateway is set with
// textContent, never parsed as HTML.
"use strict";

function cell(text, className) {
  const td = document.createElement("td");
  if (className) {
    const span = document.createElement(className === "code" ? "code" : "span");
    if (className !== "code") span.className = className;
    span.textContent = text;
    td.appendChild(span);
  } else {
    td.textContent = text;
  }
  return td;
}

function auditRow(event) {
  const tr = document.createElement("tr");
  const decision = event.decision || "";
  tr.className = "decision-" + decision;
  tr.appendChild(cell(event.ts || ""));
  tr.appendChild(cell(decision, "tag decision-" + decision));
  tr.appendChild(cell(event.code || ""));
  tr.appendChild(cell((event.agent && event.agent.name) || ""));
  tr.appendChild(cell(event.action || "", "code"));
  tr.appendChild(cell(event.resource || "", "code"));
  const trace = event.trace_id || "";
  const td = document.createElement("td");
  if (trace) {
    const a = document.createElement("a");
    a.href = "/console/audit?trace=" + encodeURIComponent(trace);
    const code = document.createElement("code");
    code.textContent = trace.slice(0, 13);
    a.appendChild(code);
    td.appendChild(a);
  }
  tr.appendChild(td);
  return tr;
}

function followAudit(tbody) {
  const source = new EventSource("/console/live");
  source.addEventListener("audit", (message) => {
    const event = JSON.parse(message.data);
    const none = tbody.querySelector("tr.none");
    if (none) none.remove();
    tbody.insertBefore(auditRow(event), tbody.firstChild);
    while (tbody.rows.length > 500) tbody.deleteRow(tbody.rows.length - 1);
  });
}

async function refreshApprovals(section) {
  const response = await fetch("/console/approvals", { headers: { "Accept": "text/html" } });
  if (!response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.querySelector("#pending");
  if (fresh) section.replaceWith(fresh);
  const count = page.querySelector("header.top nav");
  const nav = document.querySelector("header.top nav");
  if (count && nav) nav.replaceWith(count);
}

function followApprovals(section) {
  const source = new EventSource("/console/live");
  source.addEventListener("approval", () => {
    const current = document.querySelector("#pending");
    if (current) refreshApprovals(current);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const audit = document.querySelector('[data-live="audit"]');
  if (audit) followAudit(audit);
  const approvals = document.querySelector('[data-live="approvals"]');
  if (approvals) followApprovals(approvals);
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const status = button.parentElement.querySelector(".copied");
      try {
        await navigator.clipboard.writeText(source ? source.textContent : "");
        if (status) status.textContent = "Copied.";
      } catch (_) {
        if (status) status.textContent = "Select the token and copy it.";
      }
    });
  }
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm || "Are you sure?")) event.preventDefault();
    });
  }
});
