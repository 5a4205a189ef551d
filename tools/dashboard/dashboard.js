// filo's dashboard page. Live, it polls /api/state once a second; in a report (filo report),
// the state is inlined as window.FILO_STATE and drawn once. Charts are plain SVG so that the page
// needs nothing from the internet.
"use strict";

const kPollMilliseconds = 1000;
const kStaleAfterFailures = 3;
const kTimelineRounds = 14;
// No red: red marks a missed share.
const kPalette = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#4b5563", "#65a30d",
                  "#1e3a8a", "#a16207"];
const kSvgNamespace = "http://www.w3.org/2000/svg";

const colours = {};
function colourOf(name) {
  if (!(name in colours)) colours[name] = kPalette[Object.keys(colours).length % kPalette.length];
  return colours[name];
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function fixed(value, digits) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const minutes = Math.floor(seconds / 60);
  return minutes + " min " + Math.round(seconds - 60 * minutes) + " s";
}

function shortName(trainer) {
  const at = trainer.indexOf("@");
  return at < 0 ? trainer : trainer.slice(at + 1);
}

// ---- SVG helpers -----------------------------------------------------------------------------

function svgElement(tag, attributes, text) {
  const element = document.createElementNS(kSvgNamespace, tag);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function niceTicks(low, high, count) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(f => f * magnitude).find(s => s >= raw) || raw;
  const ticks = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high + 1e-9; tick += step) ticks.push(+tick.toPrecision(12));
  return ticks;
}

function tickLabel(value) {
  if (Math.abs(value) >= 10000) return (value / 1000).toFixed(0) + "k";
  if (Math.abs(value) >= 100) return value.toFixed(0);
  return +value.toPrecision(3) + "";
}

// Draws lines (series: [{name, colour, points: [[x, y]...]}]) into the element with `id`.
function lineChart(id, series, options) {
  const container = document.getElementById(id);
  container.textContent = "";
  const all = series.flatMap(s => s.points);
  if (all.length === 0) {
    container.innerHTML = '<div class="empty">no data yet</div>';
    return;
  }
  const width = 560, height = 240, left = 52, right = 12, top = 10, bottom = 34;
  let xLow = Math.min(...all.map(p => p[0])), xHigh = Math.max(...all.map(p => p[0]));
  let yLow = options.yMin !== undefined ? options.yMin : Math.min(...all.map(p => p[1]));
  let yHigh = options.yMax !== undefined ? options.yMax : Math.max(...all.map(p => p[1]));
  if (xHigh === xLow) { xLow -= 1; xHigh += 1; }
  if (yHigh === yLow) { yHigh += Math.abs(yHigh) * 0.1 || 1; yLow -= options.yMin !== undefined ? 0 : Math.abs(yLow) * 0.1 || 1; }
  const x = v => left + (v - xLow) / (xHigh - xLow) * (width - left - right);
  const y = v => top + (1 - (v - yLow) / (yHigh - yLow)) * (height - top - bottom);
  const svg = svgElement("svg", {viewBox: `0 0 ${width} ${height}`, role: "img"});
  for (const tick of niceTicks(yLow, yHigh, 4)) {
    svg.appendChild(svgElement("line", {x1: left, x2: width - right, y1: y(tick), y2: y(tick), stroke: "#e5e7eb"}));
    svg.appendChild(svgElement("text", {x: left - 6, y: y(tick) + 4, "text-anchor": "end"}, tickLabel(tick)));
  }
  for (const tick of niceTicks(xLow, xHigh, 6)) {
    svg.appendChild(svgElement("text", {x: x(tick), y: height - bottom + 16, "text-anchor": "middle"}, tickLabel(tick)));
  }
  svg.appendChild(svgElement("text", {x: (left + width - right) / 2, y: height - 4, "text-anchor": "middle"}, options.xLabel));
  for (const s of series) {
    if (s.points.length === 0) continue;
    const path = s.points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join("");
    svg.appendChild(svgElement("path", {d: path, fill: "none", stroke: s.colour, "stroke-width": 1.6}));
    if (s.points.length < 30) {
      for (const p of s.points) svg.appendChild(svgElement("circle", {cx: x(p[0]), cy: y(p[1]), r: 3, fill: s.colour}));
    }
  }
  if (series.length > 1) {
    // Top right, on a pale box so that lines under it do not hide the names.
    const legend = svgElement("g", {class: "legend"});
    const legendWidth = 16 + 7 * Math.max(...series.map(s => s.name.length));
    const legendLeft = width - right - legendWidth - 4;
    legend.appendChild(svgElement("rect", {x: legendLeft - 4, y: top, width: legendWidth + 8, height: 14 * series.length + 6,
                                           fill: "#ffffff", "fill-opacity": 0.85, stroke: "#e5e7eb"}));
    series.forEach((s, i) => {
      legend.appendChild(svgElement("rect", {x: legendLeft, y: top + 4 + 14 * i, width: 10, height: 10, fill: s.colour}));
      legend.appendChild(svgElement("text", {x: legendLeft + 14, y: top + 13 + 14 * i}, s.name));
    });
    svg.appendChild(legend);
  }
  container.appendChild(svg);
}

// Two bars per trainer: the share the scheduler planned and the trainer's share of the fleet's
// measured samples/s. When the scheduler is right they match.
function shareChart(id, trainers) {
  const container = document.getElementById(id);
  container.textContent = "";
  const speedOf = t => t.recent_samples_per_second || t.samples_per_second;
  const active = trainers.filter(t => t.planned_samples > 0 || speedOf(t) > 0);
  if (active.length === 0) {
    container.innerHTML = '<div class="empty">no data yet</div>';
    return;
  }
  const speedTotal = active.reduce((sum, t) => sum + speedOf(t), 0);
  const width = 560, rowHeight = 34, left = 150, right = 50, top = 8;
  const height = top + rowHeight * active.length + 24;
  const x = v => left + v * (width - left - right);
  const svg = svgElement("svg", {viewBox: `0 0 ${width} ${height}`, role: "img"});
  active.forEach((t, i) => {
    const y0 = top + i * rowHeight;
    const speedShare = speedTotal > 0 ? speedOf(t) / speedTotal : 0;
    svg.appendChild(svgElement("text", {x: left - 8, y: y0 + 18, "text-anchor": "end"}, shortName(t.name)));
    svg.appendChild(svgElement("rect", {x: left, y: y0 + 3, width: Math.max(0, x(t.share) - left), height: 12, fill: colourOf(t.name)}));
    svg.appendChild(svgElement("rect", {x: left, y: y0 + 16, width: Math.max(0, x(speedShare) - left), height: 12,
                                        fill: colourOf(t.name), "fill-opacity": 0.35}));
    svg.appendChild(svgElement("text", {x: x(t.share) + 4, y: y0 + 13}, (100 * t.share).toFixed(0) + "% planned"));
    svg.appendChild(svgElement("text", {x: x(speedShare) + 4, y: y0 + 26}, (100 * speedShare).toFixed(0) + "% of speed"));
  });
  svg.appendChild(svgElement("text", {x: left, y: height - 6}, "solid: planned share (last round); pale: share of samples/s (last 10 rounds)"));
  container.appendChild(svg);
}

// The last rounds, newest at the top: one thin bar per trainer from the plan's departure to its
// contribution's arrival, grey on to the round's close (waiting for the slowest), red if missed.
function timelineChart(id, timeline) {
  const container = document.getElementById(id);
  container.textContent = "";
  const rounds = timeline.slice(-kTimelineRounds).reverse();
  if (rounds.length === 0) {
    container.innerHTML = '<div class="empty">no rounds yet</div>';
    return;
  }
  const trainerNames = [...new Set(rounds.flatMap(r => r.trainers.map(t => t.trainer)))].sort();
  const barHeight = 5, gap = 1, pad = 6;
  const bandHeight = trainerNames.length * (barHeight + gap) + pad;
  const width = 1140, left = 90, right = 20, top = 8, bottom = 30;
  const height = top + bandHeight * rounds.length + bottom;
  const longest = Math.max(...rounds.map(r => r.seconds), 1e-3);
  const x = v => left + v / longest * (width - left - right);
  const svg = svgElement("svg", {viewBox: `0 0 ${width} ${height}`, role: "img"});
  for (const tick of niceTicks(0, longest, 8)) {
    svg.appendChild(svgElement("line", {x1: x(tick), x2: x(tick), y1: top, y2: height - bottom, stroke: "#eef0f3"}));
    svg.appendChild(svgElement("text", {x: x(tick), y: height - bottom + 14, "text-anchor": "middle"}, tickLabel(tick)));
  }
  svg.appendChild(svgElement("text", {x: (left + width) / 2, y: height - 4, "text-anchor": "middle"}, "seconds since the round's plan went out"));
  rounds.forEach((round, i) => {
    const y0 = top + i * bandHeight;
    svg.appendChild(svgElement("text", {x: left - 8, y: y0 + bandHeight / 2 + 3, "text-anchor": "end"},
                               "round " + round.round));
    svg.appendChild(svgElement("line", {x1: x(round.seconds), x2: x(round.seconds), y1: y0, y2: y0 + bandHeight - pad,
                                        stroke: "#111827", "stroke-width": 1}));
    for (const entry of round.trainers) {
      const row = trainerNames.indexOf(entry.trainer);
      const y = y0 + row * (barHeight + gap);
      if (!entry.delivered) {
        const missed = svgElement("rect", {x: left, y, width: x(round.seconds) - left, height: barHeight, fill: "#ef4444"});
        missed.appendChild(svgElement("title", {}, `${entry.trainer} missed round ${round.round}: ${entry.planned} samples went back to the pool`));
        svg.appendChild(missed);
        continue;
      }
      const arrival = Math.min(entry.arrival_seconds, round.seconds);
      const bar = svgElement("rect", {x: left, y, width: Math.max(1, x(arrival) - left), height: barHeight, fill: colourOf(entry.trainer)});
      bar.appendChild(svgElement("title", {}, `${entry.trainer}: ${entry.samples} samples, arrived after ${arrival.toFixed(3)} s, waited ${entry.idle_seconds.toFixed(3)} s`));
      svg.appendChild(bar);
      if (round.seconds > arrival) {
        svg.appendChild(svgElement("rect", {x: x(arrival), y, width: x(round.seconds) - x(arrival), height: barHeight, fill: "#d1d5db"}));
      }
    }
  });
  container.appendChild(svg);
}

// ---- page ------------------------------------------------------------------------------------

// A coordinator pair as its active sees it: who is active, and whether its standby could take over now.
function pairText(pair) {
  const behind = Math.max(0, pair.round - pair.peer_round);
  const peer = pair.peer_state === "passive" ? `standby ${pair.peer} holds round ${pair.peer_round} (${behind} behind)`
      : `standby ${pair.peer} ${pair.peer_state}`;
  return `active ${pair.active} · ${peer}` + (pair.failovers > 0 ? ` · ${pair.failovers} failover${pair.failovers > 1 ? "s" : ""}` : "") +
      (pair.handover ? ` · failback ${pair.handover}` : "");
}

function card(label, value) {
  return `<div class="card"><div class="label">${escapeHtml(label)}</div><div class="value">${escapeHtml(value)}</div></div>`;
}

function render(state) {
  const run = state.run;
  const report = state.mode === "report";
  const mode = document.getElementById("mode");
  mode.textContent = run.finished ? "finished" : report ? "report" : "live";
  mode.className = "badge" + (run.finished ? " finished" : "");
  const fraction = run.epoch_samples_total > 0 ? run.epoch_samples_done / run.epoch_samples_total : 0;
  document.getElementById("progress-text").textContent =
      `epoch ${run.epoch}/${run.epochs} · round ${run.round} · ${(100 * fraction).toFixed(0)}% of the epoch`;
  document.getElementById("progress-bar").style.width = (100 * fraction).toFixed(1) + "%";

  // A lost or rejected trainer's last speed is not part of the fleet's; one that left at the end is.
  const counts = t => t.state !== "lost" && t.state !== "rejected" && t.state !== "failed";
  // Speeds over each trainer's last 10 rounds: a single round's figure jumps with every hiccup.
  const speedOf = t => t.recent_samples_per_second || t.samples_per_second;
  const speedTotal = state.trainers.reduce((sum, t) => sum + (counts(t) ? speedOf(t) : 0), 0);
  const dropped = Object.entries(run.dropped || {}).map(([reason, count]) => `${reason} ${count}`).join(", ");
  document.getElementById("summary").innerHTML =
      card("loss (last round)", fixed(run.loss, 4)) +
      (run.test_perplexity !== null && run.test_perplexity !== undefined
           ? card("test perplexity", fixed(run.test_perplexity, 2))
           : card("test accuracy", run.test_accuracy === null ? "–" : fixed(run.test_accuracy, 4))) +
      card("fleet samples/s", fixed(speedTotal, 0)) +
      card("idle (last round)", fixed(100 * run.idle_fraction, 1) + "%") +
      (run.exchange ? card("exchange (last round)", run.exchange) : "") +
      (run.pair ? card("coordinator pair", pairText(run.pair)) : "") +
      card("trainers training", state.trainers.filter(t => t.state === "training").length + " of " + state.trainers.length) +
      card("samples trained", run.samples.toLocaleString("en")) +
      card("rounds seen", run.rounds_seen) +
      (dropped ? card("messages dropped", dropped) : "") +
      (report ? card("wall time", duration(state.wall_seconds)) : card("watching for", duration(state.now)));

  const body = document.querySelector("#trainers tbody");
  body.innerHTML = state.trainers.map(t => {
    const speedShare = speedTotal > 0 && counts(t) ? speedOf(t) / speedTotal : 0;
    const machine = t.host && t.host !== t.machine ? `${t.machine} (${t.host})` : t.machine;
    // The registrar's roll call gives each live trainer's heartbeat age; a trainer no longer live has none.
    const heartbeat = t.heartbeat_age_seconds !== null ? fixed(t.heartbeat_age_seconds, 1) + " s" : "–";
    const rejoined = t.rejoins > 0 ? `<span class="state rejoined">rejoined${t.rejoins > 1 ? " ×" + t.rejoins : ""}</span>` : "";
    return `<tr id="trainer-${escapeHtml(t.name)}" data-trainer="${escapeHtml(t.name)}">` +
        `<td><span class="swatch" style="background:${colourOf(t.name)}"></span>${escapeHtml(t.name)}</td>` +
        `<td>${escapeHtml(machine)}</td><td>${escapeHtml(t.device || "–")}</td><td>${escapeHtml(t.precision || "–")}</td>` +
        `<td><span class="state ${t.state}">${t.state.replace("_", " ")}</span>${rejoined}</td>` +
        `<td class="num">${fixed(100 * t.share, 1)}% (${fixed(t.planned_samples, 0)})</td>` +
        `<td class="num speed" title="last round: ${fixed(t.samples_per_second, 0)}">${fixed(speedOf(t), 0)}</td>` +
        `<td class="num">${fixed(100 * speedShare, 1)}%</td>` +
        `<td class="num">${fixed(t.idle_seconds, 3)} / ${fixed(t.idle_seconds_total, 1)}</td>` +
        `<td class="num heartbeat">${heartbeat}</td>` +
        `<td class="num">${t.rounds_delivered} / ${t.rounds_missed}</td>` +
        `<td class="note">${escapeHtml(t.reason || "")}</td></tr>`;
  }).join("") || '<tr><td colspan="12" class="empty">no trainer seen yet</td></tr>';

  lineChart("chart-loss", [{name: "loss", colour: "#2563eb", points: state.loss.map(p => [p[1], p[2]])}],
            {xLabel: "round"});
  lineChart("chart-accuracy", [{name: "test accuracy", colour: "#16a34a", points: state.accuracy.map(p => [p[1], p[2]])}],
            {xLabel: "epoch", yMax: 1});
  lineChart("chart-speed", Object.entries(state.speed).map(([name, points]) =>
                ({name: shortName(name), colour: colourOf(name), points: points.map(p => [p[1], p[2]])})),
            {xLabel: "round", yMin: 0});
  shareChart("chart-share", state.trainers);
  timelineChart("timeline", state.timeline);

  document.querySelector("#events tbody").innerHTML = state.events.slice().reverse().map(e =>
      `<tr class="${escapeHtml(e.type)}"><td class="num">${duration(e.time)}</td><td class="num">${e.round || ""}</td>` +
      `<td>${escapeHtml(e.type)}</td><td>${escapeHtml(e.text)}</td></tr>`).join("") ||
      '<tr><td colspan="4" class="empty">none yet</td></tr>';

  document.getElementById("footer").textContent = report
      ? `Report of ${state.run_dir || "a run"}, written by filo report${state.written ? " on " + state.written : ""}.`
      : `Live from ${state.source}; ${state.events_seen} events received; updated every second.`;
}

function poll() {
  let failures = 0;
  const tick = () => {
    fetch("api/state", {cache: "no-store"})
        .then(response => response.json())
        .then(state => { failures = 0; render(state); })
        .catch(() => {
          if (++failures >= kStaleAfterFailures) {
            const mode = document.getElementById("mode");
            mode.textContent = "dashboard unreachable";
            mode.className = "badge stale";
          }
        })
        .finally(() => setTimeout(tick, kPollMilliseconds));
  };
  tick();
}

if (window.FILO_STATE) render(window.FILO_STATE);
else poll();
