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
