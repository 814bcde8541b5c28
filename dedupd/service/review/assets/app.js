// dedupd review page: vanilla JS, no build step. Reads its token from the URL and sends it with every request.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const state = { tier: "duplicates", page: 0, perPage: 20, total: 0, groups: [], selected: 0, compare: null, shown: null };
const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function mediaUrl(route, path, extra = "") {
  return `${route}?token=${encodeURIComponent(token)}&path=${encodeURIComponent(path)}${extra}`;
}

function say(text, error = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = error ? "error" : "";
}

async function api(route, body) {
  const options = { headers: { "X-Dedupd-Token": token } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(route, options);
  const document_ = await reply.json();
  if (!reply.ok) throw new Error(document_.error || reply.statusText);
  return document_;
}

function match(member) {
  if (!member.method) return "";
  const score = member.distance !== null && member.distance !== undefined ? `distance ${member.distance}`
    : member.similarity !== null && member.similarity !== undefined ? `similarity ${member.similarity.toFixed(3)}` : "";
  return `${member.method} ${score}`.trim();
}

function memberView(group, member, index) {
  const facts = [
    ["pixels", member.width ? `${member.width} × ${member.height}` : "?"],
    ["size", bytes(member.size)],
    ["format", member.format || "?"],
    ["taken", member.taken || "—"],
    ["camera", member.camera || "—"],
    ["match", match(member) || "—"],
  ];
  if (member.companions && member.companions.length) facts.push(["with", member.companions.join(", ")]);
  return el("div", { class: "member" + (member.keep ? " keep" : ""), "data-path": member.path },
    el("div", { class: "thumb" }, el("img", { src: mediaUrl("/api/thumb", member.path, "&size=256"), alt: member.name,
                                              loading: "lazy" })),
    el("div", {}, el("b", {}, `${index + 1}. `), member.keep ? el("span", { class: "badge" }, "KEEP") : null,
       member.protected ? el("span", { class: "badge" }, "PROTECTED") : null,
       member.why ? el("span", { class: "why" }, ` ${member.why}`) : null),
    el("div", { class: "path", title: member.path }, member.path),
    el("dl", {}, ...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    el("button", { class: "keep-this", onclick: () => resolve(group, member.path, "trash") },
       "Keep this, trash the others"),
  );
}

function groupView(group, index) {
  const proposed = group.members.some((m) => m.keep);
  const card = el("section", { class: "card" + (index === state.selected ? " selected" : ""), "data-id": group.id },
    el("h2", {}, el("span", {}, `Group ${state.page * state.perPage + index + 1}`),
       el("span", {}, `${group.members.length} files`),
       el("span", { class: "free" }, `${bytes(group.free_bytes)} to free`),
       group.identical ? el("span", {}, "byte-identical") : null),
    el("div", { class: "members" }, ...group.members.map((member, k) => memberView(group, member, k))),
    el("div", { class: "actions" },
      proposed ? el("button", { class: "primary keep-proposed", onclick: () => resolve(group, null, "trash") },
                    "Keep proposed, trash the others (t)") : null,
      el("button", { class: "compare", onclick: () => openCompare(group) }, "Compare (c)"),
      el("button", { class: "not-duplicates", onclick: () => ignore(group) }, "Not duplicates (n)"),
      group.identical && proposed ? el("button", { class: "hardlink", onclick: () => resolve(group, null, "hardlink") },
                                       "Hard-link copies (h)") : null,
      group.identical && proposed ? el("button", { class: "reflink", onclick: () => resolve(group, null, "reflink") },
                                       "Reflink copies") : null),
  );
  card.addEventListener("click", () => select(index));
  return card;
}

function render() {
  const main = $("#groups");
  main.replaceChildren(...state.groups.map(groupView));
  const pages = Math.max(1, Math.ceil(state.total / state.perPage));
  $("#pageinfo").textContent = `page ${state.page + 1} of ${pages}`;
  $("#summary").textContent = `${state.total} groups, ${bytes(state.free)} to free`;
  if (!state.groups.length) main.append(el("p", {}, state.tier === "duplicates" ? "No duplicates." : "No similar groups."));
  document.querySelectorAll("button.tier").forEach((b) => b.classList.toggle("active", b.dataset.tier === state.tier));
}

async function load(refresh = false) {
  try {
    const page = await api(`/api/groups?tier=${state.tier}&page=${state.page}&per_page=${state.perPage}` +
                           (refresh ? "&refresh=1" : ""));
    if (state.page > 0 && !page.groups.length) { state.page -= 1; return load(); }
    // A refresh that lists the same groups leaves the cards alone: no flicker, no lost focus or click.
    const shown = JSON.stringify([state.tier, state.page, page.total, page.free_bytes, page.groups]);
    if (shown !== state.shown) {
      state.total = page.total;
      state.free = page.free_bytes;
      state.groups = page.groups;
      state.selected = Math.min(state.selected, Math.max(0, state.groups.length - 1));
      state.shown = shown;
      render();
    }
    if (page.refreshing) setTimeout(() => load(false), 700);  // the server is listing the groups anew
  } catch (error) {
    say(`Could not load the groups: ${error.message}`, true);
  }
}

function describe(outcome) {
  const done = outcome.done.length, refused = outcome.refused.length;
  let text = `${outcome.op}: ${done} file${done === 1 ? "" : "s"}` + (outcome.action ? ` (action ${outcome.action})` : "");
  if (refused) text += `; refused: ${outcome.refused.map((r) => r.reason).join("; ")}`;
  return text;
}

async function resolve(group, keep, op) {
  say("working…");
  try {
    const outcome = await api("/api/resolve", { tier: state.tier, group: group.id, keep, op });
    say(describe(outcome) + " — press u to undo", outcome.refused.length > 0);
  } catch (error) { say(error.message, true); }
  await load();
}

async function ignore(group) {
  try {
    await api("/api/ignore", { tier: state.tier, group: group.id });
    say("marked as not duplicates");
  } catch (error) { say(error.message, true); }
  await load();
}

async function undo() {
  say("undoing…");
  try { say("undone: " + describe(await api("/api/undo", {}))); } catch (error) { say(error.message, true); }
  await load();
}

function select(index) {
  state.selected = Math.max(0, Math.min(index, state.groups.length - 1));
  document.querySelectorAll(".card").forEach((card, k) => card.classList.toggle("selected", k === state.selected));
  const card = document.querySelectorAll(".card")[state.selected];
  if (card) card.scrollIntoView({ block: "nearest" });
}

function showSide(side, member) {
  const figure = $(`#${side}`);
  figure.querySelector("img").src = mediaUrl("/api/image", member.path);
  figure.querySelector("figcaption").textContent =
    `${member.keep ? "KEEP · " : ""}${member.path} · ${member.width}×${member.height} · ${bytes(member.size)}`;
}

function openCompare(group, pair = [0, 1]) {
  state.compare = { group, pair };
  $("#compare-title").textContent = `Group of ${group.members.length}: comparing ${pair[0] + 1} and ${pair[1] + 1}`;
  showSide("left", group.members[pair[0]]);
  showSide("right", group.members[pair[1]]);
  $("#zoom").value = 1;
  zoom(1);
  $("#compare").hidden = false;
}

function closeCompare() { $("#compare").hidden = true; state.compare = null; }
function swap() { if (state.compare) openCompare(state.compare.group, [...state.compare.pair].reverse()); }

function zoom(factor) {
  // Both sides at the same displayed width (a smaller copy is scaled up to the original's size), zoomed alike.
  document.querySelectorAll("#compare .pane img").forEach((img) => { img.style.width = `${100 * factor}%`; });
}

function syncScroll(from, to) {
  from.addEventListener("scroll", () => { to.scrollLeft = from.scrollLeft; to.scrollTop = from.scrollTop; });
}

function page(delta) {
  const pages = Math.max(1, Math.ceil(state.total / state.perPage));
  const next = Math.max(0, Math.min(state.page + delta, pages - 1));
  if (next !== state.page) { state.page = next; state.selected = 0; load(); }
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) return;
  const group = state.groups[state.selected];
  if (state.compare) {
    if (event.key === "Escape") closeCompare();
    else if (event.key === "s") swap();
    else if (event.key === "+" || event.key === "=") { $("#zoom").value = Number($("#zoom").value) + 0.5; zoom(Number($("#zoom").value)); }
    else if (event.key === "-") { $("#zoom").value = Math.max(1, Number($("#zoom").value) - 0.5); zoom(Number($("#zoom").value)); }
    return;
  }
  if (event.key === "j") select(state.selected + 1);
  else if (event.key === "k") select(state.selected - 1);
  else if (event.key === "ArrowRight") page(1);
  else if (event.key === "ArrowLeft") page(-1);
  else if (event.key === "u") undo();
  else if (event.key === "?") $("#shortcuts").hidden = !$("#shortcuts").hidden;
  else if (!group) return;
  else if (event.key === "t" && group.members.some((m) => m.keep)) resolve(group, null, "trash");
  else if (event.key === "n") ignore(group);
  else if (event.key === "c") openCompare(group);
  else if (event.key === "h" && group.identical) resolve(group, null, "hardlink");
  else if (/^[1-9]$/.test(event.key) && group.members[Number(event.key) - 1]) {
    resolve(group, group.members[Number(event.key) - 1].path, "trash");
  }
});

document.querySelectorAll("button.tier").forEach((button) => button.addEventListener("click", () => {
  state.tier = button.dataset.tier; state.page = 0; state.selected = 0; load(true);
}));
$("#prev").addEventListener("click", () => page(-1));
$("#next").addEventListener("click", () => page(1));
$("#undo").addEventListener("click", undo);
$("#help").addEventListener("click", () => { $("#shortcuts").hidden = !$("#shortcuts").hidden; });
$("#swap").addEventListener("click", swap);
$("#close-compare").addEventListener("click", closeCompare);
$("#zoom").addEventListener("input", (event) => zoom(Number(event.target.value)));
syncScroll($("#left .pane"), $("#right .pane"));
load(true);
