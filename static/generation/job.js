// Generation job page: until the job finishes, poll its status and move the progress bar.
// Values go in through textContent only (the error text comes from the worker).
(() => {
  const root = document.getElementById("job");
  if (!root || root.dataset.finished === "1") return;
  const field = (name) => document.getElementById(`job-${name}`);
  const bar = field("progress");

  async function poll() {
    let data;
    try {
      const response = await fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.statusText);
      data = await response.json();
    } catch (error) {
      setTimeout(poll, 5000);  // a restarting server or a dropped connection: keep watching
      return;
    }
    field("status").textContent = data.status_label;
    field("done").textContent = data.done;
    field("total").textContent = data.total;
    field("skipped").textContent = data.skipped_identical;
    const percent = Math.round(data.progress * 100);
    bar.style.width = `${percent}%`;
    bar.parentElement.setAttribute("aria-valuenow", String(percent));
    field("error").textContent = data.error;
    field("error").hidden = !data.error;
    if (!data.finished) setTimeout(poll, 1500);
  }
  setTimeout(poll, 1000);
})();
