// Progressive enhancement only: every page works without this file.
// Copy buttons: <button data-copy="#element-id" hidden> copies that input's value (or the element's
// text) to the clipboard; they stay hidden without JavaScript, where the value can be selected.
async function copyText(text, source) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      // Some browsers leave the promise pending (unfocused or headless windows): give up after 1 s.
      await Promise.race([
        navigator.clipboard.writeText(text),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1000)),
      ]);
      return;
    } catch {
      // fall back to selecting the text and the legacy copy command
    }
  }
  if (source.select) {
    source.select();
    if (document.execCommand("copy")) return;
  }
  throw new Error("copy refused");
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  event.preventDefault();
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = "value" in source ? source.value : source.textContent.trim().replace(/\s+/g, "");
  const label = button.dataset.label || button.textContent;
  button.dataset.label = label;
  try {
    await copyText(text, source);
    button.textContent = "Copied";
  } catch {
    if (source.select) source.select();
    button.textContent = "Press Ctrl+C";
  }
  setTimeout(() => { button.textContent = label; }, 2000);
});

document.querySelectorAll("button[data-copy]").forEach((button) => { button.hidden = false; });

// Remembered disclosures: <details data-remember="name"> keeps its last state (open or folded) in
// localStorage under "registry.name". Without a choice saved, a narrow screen starts folded (the
// dashboard's charts would push the table a screen down); without JavaScript it is as the HTML says.
// (A block: its names stay out of the global scope other scripts share.)
{
  const narrow = window.matchMedia("(max-width: 720px)");
  const stored = (key) => {
    try { return window.localStorage.getItem(key); } catch { return null; }  // storage may be off
  };
  document.querySelectorAll("details[data-remember]").forEach((details) => {
    const key = `registry.${details.dataset.remember}`;
    const saved = stored(key);
    if (saved === "open" || saved === "closed") details.open = saved === "open";
    else if (narrow.matches) details.open = false;
    details.addEventListener("toggle", () => {
      try { window.localStorage.setItem(key, details.open ? "open" : "closed"); } catch { /* off */ }
    });
  });

  // The top bar's menu (<details class="menu">): a button on narrow screens, always open on wide
  // ones (registry.css shows its content there even while closed, where ::details-content is
  // supported; opening it here serves the other browsers). Escape or a click elsewhere closes it.
  const menu = document.querySelector(".topbar details.menu");
  if (menu) {
    const fit = () => { menu.open = !narrow.matches; };
    fit();
    narrow.addEventListener("change", fit);
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.open && narrow.matches) {
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
    document.addEventListener("click", (event) => {
      if (menu.open && narrow.matches && !menu.contains(event.target)) menu.open = false;
    });
  }
}

// Live sessions table: the dashboard subscribes to /sessions/events/ (server-sent events) and, when a
// session begins or ends anywhere, fetches the same page again and swaps in its table (filters,
// order and page kept); rows that appeared are highlighted. The viewer's own session ending ("end")
// reloads the page, which then asks to sign in.
const liveStatus = document.getElementById("live-status");
if (liveStatus && window.EventSource && window.fetch) {
  const source = new EventSource(liveStatus.dataset.liveEvents);
  let pending = null;
  const say = (text) => { liveStatus.hidden = false; liveStatus.textContent = text; };
  const refresh = async () => {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("live-table");
    const current = document.getElementById("live-table");
    if (!fresh || !current) return;
    const known = new Set([...current.querySelectorAll("tr[data-session-id]")].map((row) => row.dataset.sessionId));
    fresh.querySelectorAll("tr[data-session-id]").forEach((row) => {
      if (!known.has(row.dataset.sessionId)) row.classList.add("live-new");
    });
    current.replaceWith(fresh);
    const count = document.getElementById("match-count");  // the total changes with the rows
    const freshCount = doc.getElementById("match-count");
    if (count && freshCount) count.replaceWith(freshCount);
    say(`Live updates on · table updated ${new Date().toLocaleTimeString()}`);
  };
  const schedule = () => {  // a burst of events costs one fetch
    clearTimeout(pending);
    pending = setTimeout(() => refresh().catch(() => say("Live updates on · refresh failed")), 150);
  };
  source.addEventListener("open", () => say("Live updates on"));
  source.addEventListener("added", schedule);
  source.addEventListener("removed", schedule);
  source.addEventListener("end", () => { source.close(); window.location.reload(); });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) say("Live updates off");
    else say("Live updates: reconnecting…");
  });
}
