// Round page: while the round is active, poll its status and refresh the progress bar, log and curves.
// Text goes in through textContent only: log lines come from the worker and are never parsed as HTML.
import { pollStatus, setProgress } from "../js/status.js";

const root = document.getElementById("round");
if (root && root.dataset.active === "1") {
  const statusEl = document.getElementById("round-status");
  const log = document.getElementById("round-log");
  const curves = document.getElementById("round-curves");
  let metrics = -1;
  pollStatus(root.dataset.statusUrl, (data) => {
    statusEl.textContent = data.status_label;
    statusEl.className = `status status-${data.status}`;
    setProgress(document.getElementById("round-progress"), data.progress);
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = data.log_tail;
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (data.metrics !== metrics) {
      metrics = data.metrics;
      curves.src = `${root.dataset.curvesUrl}?n=${metrics}`;
    }
    if (!data.active) window.location.reload();  // final state: evaluation table, new policy
    return data.active;
  }, 2000);
}
