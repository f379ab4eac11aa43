// Generation job page: until the job finishes, poll its status and move the progress bar.
// Values go in through textContent only (the error text comes from the worker).
// New skipped prompts, or the job's end, reload the page once: the list is rendered by the server.
import { pollStatus, setProgress } from "../js/status.js";

const root = document.getElementById("job");
if (root && root.dataset.finished !== "1") {
  const field = (name) => document.getElementById(`job-${name}`);
  const skippedShown = Number(root.dataset.skipped);
  pollStatus(root.dataset.statusUrl, (data) => {
    field("status").textContent = data.status_label;
    field("phase").textContent = data.phase_label;
    field("phase-part").hidden = data.status !== "running";
    field("sampled").textContent = data.sampled;
    field("done").textContent = data.done;
    field("total").textContent = data.total;
    field("skipped").textContent = data.skipped;
    field("identical").textContent = data.skipped_identical;
    field("duplicates").textContent = data.duplicates;
    setProgress(field("progress"), data.progress);
    field("error-summary").textContent = data.error_summary;
    field("error-detail").textContent = data.error;
    field("error").hidden = !data.error;
    if (data.finished && data.skipped !== skippedShown) window.location.reload();
    return !data.finished;
  }, 1500);
}
