// Start-round form: each campaign's held-out warning follows "gate min heldout pairs" as the admin types.
const field = document.getElementById("id_gate_min_heldout_pairs");
if (field) {
  field.addEventListener("input", () => {
    const needed = Number.parseInt(field.value, 10);
    for (const note of document.querySelectorAll("[data-gate-warning]")) {
      // An empty or invalid value leaves the note as it is: the form refuses it on submit.
      if (!Number.isInteger(needed) || needed < 1) continue;
      note.hidden = Number(note.dataset.heldout) >= needed;
      note.querySelector("[data-gate-min]").textContent = String(needed);
    }
  });
}
