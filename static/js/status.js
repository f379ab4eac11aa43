// Shared by the pages that watch a background task (a generation job, a training round).

// Fetch the status URL until `update(data)` returns false. A failed request (a restarting
// server, a dropped connection) is retried after 5 s: the page keeps watching.
export function pollStatus(url, update, intervalMs) {
  async function poll() {
    let data;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.statusText);
      data = await response.json();
    } catch (error) {
      setTimeout(poll, 5000);
      return;
    }
    if (update(data)) setTimeout(poll, intervalMs);
  }
  setTimeout(poll, 1000);
}

// Fill a progress bar (its parent carries the ARIA progressbar role) to `fraction` of 1.
export function setProgress(bar, fraction) {
  const percent = Math.round(fraction * 100);
  bar.style.width = `${percent}%`;
  bar.parentElement.setAttribute("aria-valuenow", String(percent));
}
