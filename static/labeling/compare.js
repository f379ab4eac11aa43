// The comparison page: keyboard-driven judging with the next pair prefetched.
//
// Text from the server arrives twice: raw (`text`) and as HTML that
// labeling.rendering sanitized (`html`); only the sanitized HTML is ever put
// into the page. Requests go through the same REST API that scripts use.

const bench = document.getElementById("workbench");
const campaignId = bench.dataset.campaign;
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

const el = {
  pair: $("pair"), empty: $("empty"), loading: $("loading"), notice: $("notice"),
  prompt: $("prompt-body"), left: $("left-body"), right: $("right-body"),
  strength: $("strength"), strengthQuestion: $("strength-question"),
  rationaleBox: $("rationale-box"), rationale: $("rationale"),
  guidelines: $("guidelines"), keys: $("keys"),
  last: $("last"), lastLabel: $("last-label"),
  flagging: $("flagging"), flagNote: $("flag-note"),
  todayCount: $("today-count"), todayBar: $("today-bar"),
  campaignCount: $("campaign-count"), campaignBar: $("campaign-bar"),
};

// --- Server -----------------------------------------------------------------

const RETRIES = 3;

async function api(path, body, { retries = 0 } = {}) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken, Accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (networkError) {
      response = null;
    }
    // Submits are idempotent on the server, so a lost response is safe to retry.
    if ((response === null || response.status >= 500) && attempt < retries) {
      await new Promise((resolve) => setTimeout(resolve, 300 * 2 ** attempt));
      continue;
    }
    if (response === null) throw new Error("The server could not be reached.");
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    return { status: response.status, data };
  }
}

async function fetchNext(after) {
  const { status, data } = await api(`/api/labeling/campaigns/${campaignId}/next/`, { after: after ?? null });
  if (status === 204) return null;
  if (status !== 200) throw new Error(data?.detail || `Could not load the next pair (${status}).`);
  return data;
}

// --- Display ----------------------------------------------------------------

const visible = { since: performance.now(), spent: 0 };
let current = JSON.parse($("first-pair").textContent);
let prefetched = current ? fetchNext(current.assignment_id) : Promise.resolve(null);
let step = "pick"; // pick -> strength (left/right on a strength scale) -> rationale (when the box is open and empty); or pick -> flag
let pending = null; // {choice, strength}
let busy = false;

function setHtml(node, html) {
  node.innerHTML = html; // sanitized server-side (labeling.rendering.markdown_to_safe_html)
  node.scrollTop = 0;
}

function turnBox(turn) {
  const box = document.createElement("div");
  box.className = `turn turn-${turn.role === "user" || turn.role === "assistant" ? turn.role : "system"}`;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = turn.role;
  const body = document.createElement("div");
  body.innerHTML = turn.html; // sanitized server-side
  box.append(role, body);
  return box;
}

// A conversation opens on its last turn (the one being answered); earlier turns fold behind one control.
function renderPrompt(prompt) {
  el.prompt.replaceChildren();
  el.prompt.scrollTop = 0;
  if (!prompt.messages) {
    setHtml(el.prompt, prompt.html);
    return;
  }
  const earlier = prompt.messages.slice(0, -1);
  if (earlier.length) {
    const fold = document.createElement("details");
    fold.className = "earlier";
    const summary = document.createElement("summary");
    const label = `${earlier.length} earlier turn${earlier.length === 1 ? "" : "s"}`;
    summary.textContent = `Show ${label}`;
    fold.addEventListener("toggle", () => {
      summary.textContent = `${fold.open ? "Hide" : "Show"} ${label}`;
      markOverflow(el.prompt);
    });
    fold.append(summary, ...earlier.map(turnBox));
    el.prompt.append(fold);
  }
  el.prompt.append(turnBox(prompt.messages[prompt.messages.length - 1]));
}

function toggleEarlierTurns() {
  const fold = el.prompt.querySelector("details.earlier");
  if (fold) fold.open = !fold.open;
}

// Scroll areas say when they hold more than they show (a shadow on the cut edge).
function markOverflow(node) {
  node.classList.toggle("more-above", node.scrollTop > 1);
  node.classList.toggle("more-below", node.scrollTop + node.clientHeight < node.scrollHeight - 1);
}

// The prompt takes the height the answers do not need: at least PROMPT_SHARE of the pair's
// area, more when both answers are short. (CSS flex cannot say "the rest after the other's content".)
const PROMPT_SHARE = 0.45;
const wide = window.matchMedia("(min-width: 801px)");
const promptCard = el.prompt.closest(".prompt");
const sides = document.querySelector(".sides");

function fitPrompt() {
  if (el.pair.hidden || !wide.matches) {
    promptCard.style.maxHeight = "";
    return;
  }
  const room = el.pair.clientHeight - document.querySelector(".answer").offsetHeight;
  const chrome = sides.offsetHeight - Math.max(el.left.clientHeight, el.right.clientHeight);
  const answersNeed = Math.max(el.left.scrollHeight, el.right.scrollHeight) + chrome;
  promptCard.style.maxHeight = `${Math.max(PROMPT_SHARE * room, room - answersNeed)}px`;
}

window.addEventListener("resize", fitPrompt);

const scrollAreas = [el.prompt, el.left, el.right];
const resized = new ResizeObserver(() => scrollAreas.forEach(markOverflow));
for (const node of scrollAreas) {
  node.addEventListener("scroll", () => markOverflow(node), { passive: true });
  resized.observe(node);
}

function show(pair) {
  current = pair;
  resetAnswer();
  el.loading.hidden = true;
  if (!pair) {
    el.pair.hidden = true;
    el.empty.hidden = false;
    showEmptyState();
    refreshProgress(); // the last submit may have just finished the campaign
    return;
  }
  renderPrompt(pair.prompt);
  setHtml(el.left, pair.left.html);
  setHtml(el.right, pair.right.html);
  el.pair.hidden = false;
  fitPrompt();
  scrollAreas.forEach(markOverflow);
  el.empty.hidden = true;
  bench.dataset.assignment = pair.assignment_id;
  visible.spent = 0;
  visible.since = performance.now();
}

function timeOnTask() {
  const now = performance.now();
  return Math.round(visible.spent + (document.hidden ? 0 : now - visible.since));
}

document.addEventListener("visibilitychange", () => {
  // Time on task counts only while the page is in view.
  if (document.hidden) visible.spent += performance.now() - visible.since;
  else visible.since = performance.now();
});

function notice(message, kind = "info") {
  el.notice.textContent = message;
  el.notice.dataset.kind = kind;
}

function setBar(bar, value, max) {
  bar.setAttribute("aria-valuenow", value);
  bar.setAttribute("aria-valuemax", max);
  bar.firstElementChild.style.width = `${max ? Math.min(100, (100 * value) / max) : 0}%`;
}

let campaignState = "open";

// Which "nothing to judge" message is true: no pairs yet, all done, or none for you right now.
function showEmptyState() {
  for (const box of el.empty.querySelectorAll("[data-state]")) box.hidden = box.dataset.state !== campaignState;
}

function showProgress(p) {
  el.todayCount.textContent = p.mine_today;
  setBar(el.todayBar, p.mine_today, p.daily_goal);
  el.campaignCount.textContent = p.campaign_state === "no_pairs" ? "no pairs yet" : `${p.campaign_done} / ${p.campaign_needed}${p.campaign_more ? "+" : ""}`;
  setBar(el.campaignBar, p.campaign_done, p.campaign_needed);
  campaignState = p.campaign_state;
  showEmptyState();
}

// Each answer asks for the counts again, and the answers can come back out of order (a busy server): a
// reply older than the one shown is dropped, so a stale count never overwrites a newer one.
let progressAsked = 0;
let progressShown = 0;

async function refreshProgress() {
  const asked = ++progressAsked;
  const { status, data } = await api(`/api/labeling/campaigns/${campaignId}/me/`);
  if (status !== 200 || asked < progressShown) return;
  progressShown = asked;
  showProgress(data);
}

// --- Answering --------------------------------------------------------------
// A complete answer (a pick, and a strength where the campaign asks for one) is
// sent at once, unless the rationale box is open and still empty: then the
// cursor moves into it and Enter sends pick, strength and rationale together.
// A rationale typed before the pick goes with it.

function rationaleOpen() {
  return !el.rationaleBox.hidden;
}

function resetAnswer() {
  step = "pick";
  pending = null;
  closeFlag();
  el.strength.hidden = true;
  el.rationale.value = "";
  el.rationaleBox.hidden = !current?.rationale_required;
  for (const b of document.querySelectorAll("[data-choice]")) b.classList.remove("chosen");
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
}

function choose(choice) {
  if (!current || !current.choices.includes(choice)) return;
  pending = { choice, strength: null };
  for (const b of document.querySelectorAll("[data-choice]")) b.classList.toggle("chosen", b.dataset.choice === choice);
  if (current.strength_scale === "three" && (choice === "left" || choice === "right")) {
    step = "strength";
    el.strengthQuestion.textContent = `How much better is the ${choice} answer?`;
    el.strength.hidden = false;
    if (document.activeElement === el.rationale) el.rationale.blur();
    return;
  }
  answered();
}

function setStrength(strength) {
  if (!pending) return;
  pending.strength = strength;
  el.strength.hidden = true;
  answered();
}

function answered() {
  if (rationaleOpen() && !el.rationale.value.trim()) {
    step = "rationale";
    el.rationale.focus();
    notice(current.rationale_required ? "Write a short rationale, then press Enter." : "Enter sends your answer (the rationale is optional).");
    return;
  }
  submit();
}

function openRationale() {
  el.rationaleBox.hidden = false;
  el.rationale.focus();
}

// Enter in the rationale box: send the answer if there is one, else leave the box for the pick keys.
function rationaleEnter() {
  if (!pending) {
    el.rationale.blur();
    notice("Now pick 1-4: your rationale goes with it.");
  } else if (step === "strength") {
    el.rationale.blur();
    notice("How much better? 1-3, or Enter to leave it out.");
  } else if (current.rationale_required && !el.rationale.value.trim()) {
    notice("A rationale is required here.", "warn");
  } else {
    submit();
  }
}

function back() {
  if (step === "pick") {
    el.guidelines.hidden = true;
    el.keys.hidden = true;
    syncToggles();
  }
  const typed = el.rationale.value;
  const open = rationaleOpen();
  resetAnswer();
  el.rationale.value = typed;
  el.rationaleBox.hidden = !open;
}

// Show the prefetched pair at once, then send `request` for the pair just left
// and prefetch the one after. The next prefetch waits for the request, so the
// server never hands back the pair that is still being submitted.
let advances = 0; // pairs left so far: a late answer offers its undo only if nothing came after it

async function advance(request, label) {
  if (busy || !current) return;
  busy = true;
  advances += 1;
  forgetUndo(); // `u` means the answer just given: it is offered again once that one is stored
  const done = current;
  const loadingTimer = setTimeout(() => { el.loading.hidden = false; }, 150);
  try {
    let next;
    try {
      next = await prefetched;
    } catch (error) {
      next = await fetchNext(done.assignment_id);
    }
    show(next);
    const sent = request(done).then(
      (message) => message && notice(message, "warn"),
      (error) => notice(`${label}: ${error.message}`, "error"),
    );
    prefetched = sent.then(() => (next ? fetchNext(next.assignment_id) : null));
    prefetched.catch(() => {}); // surfaced when it is awaited
    sent.then(refreshProgress);
  } catch (error) {
    notice(error.message, "error");
  } finally {
    clearTimeout(loadingTimer);
    el.loading.hidden = true;
    busy = false;
  }
}

const CHOICE_LABELS = { left: "Left", right: "Right", tie: "Tie", both_bad: "Both bad" };
const STRENGTH_LABELS = { 1: "slightly better", 2: "clearly better", 3: "much better" };

function answerLabel({ choice, strength }) {
  return strength ? `${CHOICE_LABELS[choice]}, ${STRENGTH_LABELS[strength]}` : CHOICE_LABELS[choice];
}

function submit() {
  const body = {
    choice: pending.choice,
    strength: pending.strength,
    rationale: el.rationale.value.trim(),
    time_ms: timeOnTask(),
  };
  notice("");
  const mine = advances + 1;
  advance(async (pair) => {
    const { status, data } = await api(`/api/labeling/assignments/${pair.assignment_id}/submit/`, body, { retries: RETRIES });
    if (status === 200 || status === 201) {
      if (mine === advances) offerUndo(pair, answerLabel(body));
      return null;
    }
    return data?.detail || `Your answer was not stored (${status}).`;
  }, "Submit");
}

// --- Flag -------------------------------------------------------------------

let flagReason = null;

function openFlag() {
  step = "flag";
  flagReason = null;
  el.flagging.hidden = false;
  notice("Why flag it? 1-3, an optional note, then Enter.");
}

function closeFlag() {
  flagReason = null;
  el.flagNote.value = "";
  el.flagging.hidden = true;
  for (const b of document.querySelectorAll("[data-flag]")) b.classList.remove("chosen");
}

function pickFlag(reason) {
  flagReason = reason;
  for (const b of document.querySelectorAll("[data-flag]")) b.classList.toggle("chosen", b.dataset.flag === reason);
  el.flagNote.focus();
}

function sendFlag() {
  if (!flagReason) {
    notice("Pick a reason first: 1-3.", "warn");
    return;
  }
  const body = { reason: flagReason, note: el.flagNote.value.trim() };
  notice("Flagged: you will not see this pair again.");
  advance(async (pair) => {
    const { status, data } = await api(`/api/labeling/assignments/${pair.assignment_id}/flag/`, body, { retries: RETRIES });
    return status === 200 ? null : data?.detail || `The flag was not stored (${status}).`;
  }, "Flag");
}

// --- Undo -------------------------------------------------------------------
// The last stored answer can be reopened for the server's window (LABELING_UNDO_WINDOW_S):
// the pair comes back, and the next answer revises the same judgment. The pair that
// was on screen comes back after it.

const undoWindowMs = Number(bench.dataset.undoWindowS) * 1000;
let last = null; // {pair, label, timer}

function offerUndo(pair, label) {
  forgetUndo();
  if (!undoWindowMs) return;
  last = { pair, label, timer: setTimeout(forgetUndo, undoWindowMs) };
  el.lastLabel.textContent = label;
  el.last.hidden = false;
}

function forgetUndo() {
  if (last) clearTimeout(last.timer);
  last = null;
  el.last.hidden = true;
}

async function undo() {
  if (!last || busy) return;
  const target = last;
  forgetUndo();
  busy = true;
  try {
    const { status, data } = await api(`/api/labeling/assignments/${target.pair.assignment_id}/undo/`, {});
    if (status !== 200) {
      notice(data?.detail || `Could not undo (${status}).`, "warn");
      return;
    }
    prefetched = Promise.resolve(current);
    show({ ...target.pair, reopened: true });
    if (data.rationale) {
      el.rationale.value = data.rationale;
      el.rationaleBox.hidden = false;
    }
    notice(`Reopened: you answered ${target.label}. Answer again, or s to keep it.`);
  } catch (error) {
    notice(error.message, "error");
  } finally {
    busy = false;
  }
}

function skip() {
  notice("");
  if (current?.reopened) {
    // An undone pair keeps its stored answer unless it is answered again.
    advance(async () => null, "Keep");
    return;
  }
  advance(async (pair) => {
    const { status, data } = await api(`/api/labeling/assignments/${pair.assignment_id}/skip/`, {}, { retries: RETRIES });
    return status === 200 ? null : data?.detail || `Skip failed (${status}).`;
  }, "Skip");
}

// --- Keys and buttons -------------------------------------------------------

function syncToggles() {
  $("toggle-guidelines").setAttribute("aria-expanded", String(!el.guidelines.hidden));
  $("toggle-keys").setAttribute("aria-expanded", String(!el.keys.hidden));
}

function toggle(panel) {
  panel.hidden = !panel.hidden;
  syncToggles();
}

const PICK_KEYS = { 1: "left", 2: "right", 3: "tie", 4: "both_bad" };

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target === el.flagNote) {
    if (event.key === "Enter") {
      event.preventDefault();
      sendFlag();
    } else if (event.key === "Escape") {
      event.preventDefault();
      back();
    }
    return;
  }
  const inBox = event.target === el.rationale;
  if (inBox) {
    if (event.key === "Escape") {
      event.preventDefault();
      el.rationale.blur();
      if (step === "rationale") back();
    } else if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      rationaleEnter();
    }
    return;
  }
  if (event.target instanceof HTMLElement && event.target.matches("input, select, textarea")) return;
  const action = shortcut(event.key);
  if (action) {
    // Also keeps the key's character out of the rationale box when an action focuses it.
    event.preventDefault();
    action();
  }
}

function shortcut(key) {
  if (key === "?") return () => toggle(el.keys);
  if (key === "g") return () => toggle(el.guidelines);
  if (key === "t") return toggleEarlierTurns;
  if (key === "Escape") return back;
  if (!current || busy) return null;
  if (step === "strength") {
    if (["1", "2", "3"].includes(key)) return () => setStrength(Number(key));
    if (key === "Enter") return () => setStrength(null);
    if (key === "r") return openRationale;
    return null;
  }
  if (step === "flag") {
    const reasons = { 1: "unsafe", 2: "broken", 3: "unclear" };
    if (key in reasons) return () => pickFlag(reasons[key]);
    if (key === "Enter") return sendFlag;
    return null;
  }
  if (step !== "pick") return null;
  if (key in PICK_KEYS) return () => choose(PICK_KEYS[key]);
  if (key === "s") return skip;
  if (key === "f") return openFlag;
  if (key === "r") return openRationale;
  if (key === "u") return last ? undo : null;
  return null;
}

document.addEventListener("keydown", onKey);
for (const b of document.querySelectorAll("[data-choice]")) b.addEventListener("click", () => choose(b.dataset.choice));
for (const b of document.querySelectorAll("[data-strength]")) {
  b.addEventListener("click", () => setStrength(b.dataset.strength ? Number(b.dataset.strength) : null));
}
$("skip").addEventListener("click", skip);
$("flag").addEventListener("click", openFlag);
$("open-rationale").addEventListener("click", openRationale);
for (const b of document.querySelectorAll("[data-flag]")) b.addEventListener("click", () => pickFlag(b.dataset.flag));
$("undo").addEventListener("click", undo);
$("toggle-guidelines").addEventListener("click", () => toggle(el.guidelines));
$("toggle-keys").addEventListener("click", () => toggle(el.keys));

showProgress(JSON.parse($("first-progress").textContent));
show(current);
