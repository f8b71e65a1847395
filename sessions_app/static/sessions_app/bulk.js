// Bulk terminations (sessions_app/views/sessions.py, `_bulk`): progressive enhancement only.
// Without this file the confirmation form posts once and the server ends every batch in that request.
// With it, the form posts batch by batch (batch=1; each answer is JSON {ended, cascaded, remaining,
// done, state, redirect}), a <progress> shows how far it is, the button stays disabled (no double
// submission) and the page goes to the result when the last batch is done. A form error (400 on the
// first batch) submits the form normally, so the server shows the page with the error next to its field.
// A form marked data-plain (this session ends with the others) is only kept from being sent twice.
for (const form of document.querySelectorAll("form[data-bulk-terminate]")) {
  const button = form.querySelector("button[type=submit]");
  const box = form.querySelector("[data-bulk-progress]");
  const bar = box && box.querySelector("progress");
  const status = box && box.querySelector("[data-bulk-status]");
  const total = Number(form.dataset.total) || 0;
  const say = (text) => { if (status) status.textContent = text; };
  const number = (n) => Number(n).toLocaleString("en-US");

  form.addEventListener("submit", async (event) => {
    if (form.dataset.running) {  // a second click, or Enter, while it runs
      event.preventDefault();
      return;
    }
    form.dataset.running = "1";
    if (!window.fetch || !window.FormData || !box || "plain" in form.dataset) {
      // The plain POST runs it all; only keep it from being sent twice.
      setTimeout(() => { button.disabled = true; }, 0);
      return;
    }
    event.preventDefault();
    button.disabled = true;
    box.hidden = false;
    bar.max = Math.max(total, 1);
    bar.value = 0;
    say(`0 of ${number(total)} done…`);
    let state = "";
    let first = true;
    try {
      for (;;) {
        const body = new FormData(form);
        body.set("batch", "1");
        if (form.dataset.batchSize) body.set("size", form.dataset.batchSize);
        if (state) body.set("state", state);
        const response = await fetch(form.action, {
          method: "POST",
          body,
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (response.status === 400 && first) {
          form.submit();  // the server answers with the page and the error
          return;
        }
        if (response.redirected) {  // this session has ended (signed out): the page says why
          window.location.assign(response.url);
          return;
        }
        const answer = response.ok ? await response.json().catch(() => null) : null;
        if (!answer || answer.errors) throw new Error(`the server answered ${response.status}`);
        first = false;
        if (answer.done) {
          bar.value = bar.max;
          say("Done.");
          window.location.assign(answer.redirect);
          return;
        }
        state = answer.state;
        const done = Math.max(0, Math.min(total, total - answer.remaining));
        bar.value = done;
        say(`${number(done)} of ${number(total)} done…`);
      }
    } catch (error) {
      say(`Stopped: ${error.message}. What ended stays ended; open this page again for the rest.`);
      button.disabled = false;
      delete form.dataset.running;
    }
  });
}
