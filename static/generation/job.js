// Generation job page: until the job finishes, poll its status and move the progress bar.
// Values go in through textContent only (the error text comes from the worker).
import { pollStatus, setProgress } from "../js/status.js";

const root = document.getElementById("job");
if (root && root.dataset.finished !== "1") {
  const field = (name) => document.getElementById(`job-${name}`);
  pollStatus(root.dataset.statusUrl, (data) => {
    field("status").textContent = data.status_label;
    field("done").textContent = data.done;
    field("total").textContent = data.total;
    field("skipped").textContent = data.skipped_identical;
    setProgress(field("progress"), data.progress);
    field("error").textContent = data.error;
    field("error").hidden = !data.error;
    return !data.finished;
  }, 1500);
}
