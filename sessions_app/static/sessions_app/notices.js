// New-sign-in banner, live (progressive enhancement: without this file the banner shows at the next
// page load). While the page is visible it listens to the notice stream of its session and, when a
// notice of this account is created or answered anywhere, fetches the banner again and swaps it in.
// "end" (this session was ended) reloads the page, which then asks to sign in. A hidden tab closes
// its stream, so background tabs hold no connection, and catches up when it is shown again.
const noticeBanner = document.getElementById("sign-in-notices");
if (noticeBanner && window.EventSource && window.fetch) {
  let source = null;
  let unsupported = false;  // no event stream here (WSGI): stop asking
  let pending = null;
  const refresh = async () => {
    const back = window.location.pathname + window.location.search;
    const response = await fetch(`${noticeBanner.dataset.banner}?next=${encodeURIComponent(back)}`, {
      credentials: "same-origin",
    });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("sign-in-notices");
    const current = document.getElementById("sign-in-notices");
    if (fresh && current) current.replaceWith(fresh);
  };
  const schedule = () => {  // a burst of events costs one fetch
    clearTimeout(pending);
    pending = setTimeout(() => refresh().catch(() => {}), 150);
  };
  const close = () => {
    if (source) source.close();
    source = null;
  };
  const open = () => {
    if (source || unsupported) return;
    source = new EventSource(noticeBanner.dataset.events);
    source.addEventListener("notice", schedule);
    source.addEventListener("end", () => { close(); window.location.reload(); });
    source.addEventListener("error", () => {
      if (source && source.readyState === EventSource.CLOSED) { unsupported = true; close(); }
    });
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") { schedule(); open(); } else close();
  });
  if (document.visibilityState !== "hidden") open();
}
