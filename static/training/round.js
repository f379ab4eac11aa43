// Round page: while the round is active, poll its status and refresh the progress bar, log and curves.
// Text goes in through textContent only: log lines come from the worker and are never parsed as HTML.
(() => {
  const root = document.getElementById("round");
  if (!root || root.dataset.active !== "1") return;
  const statusEl = document.getElementById("round-status");
  const bar = document.getElementById("round-progress");
  const log = document.getElementById("round-log");
  const curves = document.getElementById("round-curves");
  let metrics = -1;

  async function poll() {
    let data;
    try {
      const response = await fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.statusText);
      data = await response.json();
    } catch (error) {
      setTimeout(poll, 5000);
      return;
    }
    statusEl.textContent = data.status_label;
    statusEl.className = `status status-${data.status}`;
    bar.style.width = `${Math.round(data.progress * 100)}%`;
    bar.parentElement.setAttribute("aria-valuenow", String(Math.round(data.progress * 100)));
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = data.log_tail;
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (data.metrics !== metrics) {
      metrics = data.metrics;
      curves.src = `${root.dataset.curvesUrl}?n=${metrics}`;
    }
    if (data.active) setTimeout(poll, 2000);
    else window.location.reload();  // final state: evaluation table, new policy
  }
  setTimeout(poll, 1000);
})();
