// Sizes the progress bar (an inline style attribute would be blocked by the page's CSP).
const fill = document.getElementById("campaign-fill");
fill.style.width = `${Math.min(100, 100 * Number(fill.dataset.fraction))}%`;
