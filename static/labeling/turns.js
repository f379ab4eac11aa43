// The prompt admin's chat turns: rows of role + text over the hidden JSON textarea that the server reads.
// Built with DOM calls and textContent only: a prompt's text is never parsed as HTML.
"use strict";

function turnsEditor(source) {
  let turns;
  try {
    turns = source.value.trim() ? JSON.parse(source.value) : [];
  } catch {
    return; // not JSON (typed by hand without this editor): leave the raw text to fix
  }
  if (turns === null) turns = [];
  if (!Array.isArray(turns)) return;
  const roles = JSON.parse(source.dataset.roles);
  const editor = document.createElement("div");
  editor.className = "turns";
  const list = document.createElement("ol");
  list.className = "turns-list";
  const add = document.createElement("button");
  add.type = "button";
  add.className = "button turns-add";
  add.textContent = "Add a turn";
  const note = document.createElement("p");
  note.className = "turns-note";
  editor.append(list, add, note);
  source.hidden = true;
  source.after(editor);

  function sync() {
    source.value = turns.length ? JSON.stringify(turns) : "";
    const last = turns[turns.length - 1];
    note.textContent = !turns.length
      ? "No turns: this is a plain-text prompt."
      : last.role === "user"
        ? ""
        : "The last turn must be the user's: the model answers it.";
  }

  function row(turn, index) {
    const item = document.createElement("li");
    item.className = index === badTurn ? "turn turn-error" : "turn";
    const label = document.createElement("span");
    label.className = "turn-number";
    label.textContent = `Turn ${index + 1}`;
    const role = document.createElement("select");
    role.className = "turn-role";
    role.setAttribute("aria-label", `Turn ${index + 1} role`);
    for (const name of roles) role.add(new Option(name, name, false, name === turn.role));
    role.addEventListener("change", () => { turn.role = role.value; sync(); });
    const text = document.createElement("textarea");
    text.className = "turn-text vLargeTextField";
    text.rows = Math.min(12, Math.max(3, String(turn.content ?? "").split("\n").length + 1));
    text.value = turn.content ?? "";
    text.setAttribute("aria-label", `Turn ${index + 1} text`);
    text.addEventListener("input", () => { turn.content = text.value; sync(); });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "button turn-remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove turn ${index + 1}`);
    remove.addEventListener("click", () => { turns.splice(index, 1); badTurn = -1; render(); });
    const head = document.createElement("div");
    head.className = "turn-head";
    head.append(label, role, remove);
    item.append(head, text);
    return item;
  }

  function render() {
    list.replaceChildren(...turns.map(row));
    sync();
  }

  // The server names a bad turn ("Turn 3: ..."): outline that one, not every row of the field.
  const error = source.closest(".form-row")?.querySelector(".errorlist")?.textContent.match(/^\s*Turn (\d+)/);
  let badTurn = error ? Number(error[1]) - 1 : -1;

  add.addEventListener("click", () => {
    const last = turns[turns.length - 1];
    turns.push({ role: last && last.role === "user" ? "assistant" : "user", content: "" });
    render();
    list.lastElementChild.querySelector("textarea").focus();
  });
  render();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const source of document.querySelectorAll("textarea[data-turns]")) turnsEditor(source);
});
