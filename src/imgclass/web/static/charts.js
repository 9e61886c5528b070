// Thin layer over Chart.js (the UMD build, loaded by a <script> tag before this module
// runs, as window.Chart). Everything here degrades to a no-op when the file is missing,
// so the dashboard's figures and tables still work.

export const COLORS = {
  accent: "#4f46e5",
  accentSoft: "#a5b4fc",
  teal: "#0d9488",
  amber: "#f59e0b",
  rose: "#e11d48",
  sky: "#0284c7",
  slate: "#94a3b8",
  grid: "#eef0f4",
  text: "#667085",
};
export const PALETTE = [
  COLORS.accent, COLORS.teal, COLORS.amber, COLORS.sky, COLORS.rose, "#7c3aed", "#65a30d", COLORS.slate,
];

export function available() {
  return typeof window.Chart === "function";
}

let configured = false;

function configure() {
  if (configured) return;
  const { defaults } = window.Chart;
  defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
  defaults.font.size = 12;
  defaults.color = COLORS.text;
  defaults.borderColor = COLORS.grid;
  defaults.maintainAspectRatio = false;
  defaults.animation.duration = 350;
  defaults.plugins.legend.labels.boxWidth = 12;
  defaults.plugins.legend.labels.boxHeight = 12;
  defaults.plugins.tooltip.padding = 10;
  configured = true;
}

/** Draw ``config`` on ``canvas``, reusing the chart already there (animates the change). */
export function draw(canvas, config) {
  if (!available()) return null;
  configure();
  const existing = window.Chart.getChart(canvas);
  if (existing && existing.config.type === config.type) {
    existing.data = config.data;
    existing.options = config.options || {};
    existing.update();
    return existing;
  }
  if (existing) existing.destroy();
  return new window.Chart(canvas, config);
}

export function clear(canvas) {
  if (!available()) return;
  const existing = window.Chart.getChart(canvas);
  if (existing) existing.destroy();
}

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
// Whole numbers only, "12K" rather than "12,000" so that axis labels never need rotating.
const numberTicks = { precision: 0, maxRotation: 0, callback: (value) => compact.format(value) };

/** Vertical bars over time; ``series`` is [{label, data, color}], stacked. */
export function timeBars(canvas, labels, series) {
  return draw(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: series.map((s) => ({
        label: s.label,
        data: s.data,
        backgroundColor: s.color,
        borderRadius: 2,
        maxBarThickness: 28,
      })),
    },
    options: {
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { display: series.length > 1, position: "top", align: "end" } },
      scales: {
        x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
        y: { stacked: true, beginAtZero: true, ticks: numberTicks },
      },
    },
  });
}

/** Lines over time; ``series`` is [{label, data, color}]. */
export function timeLines(canvas, labels, series, unit = "") {
  return draw(canvas, {
    type: "line",
    data: {
      labels,
      datasets: series.map((s) => ({
        label: s.label,
        data: s.data,
        borderColor: s.color,
        backgroundColor: s.color,
        borderWidth: 2,
        pointRadius: labels.length > 60 ? 0 : 2,
        tension: 0.25,
        spanGaps: true,
      })),
    },
    options: {
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: { position: "top", align: "end" },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.formattedValue} ${unit}` } },
      },
      scales: {
        x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
        y: { beginAtZero: true, title: { display: Boolean(unit), text: unit } },
      },
    },
  });
}

/** Horizontal bars, biggest first; ``onPick(index)`` runs when a bar is clicked. */
export function rankBars(canvas, labels, values, { color = COLORS.accent, label = "Requests", titles = null, onPick = null } = {}) {
  return draw(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: [{ label, data: values, backgroundColor: color, borderRadius: 3, maxBarThickness: 22 }],
    },
    options: {
      indexAxis: "y",
      plugins: {
        legend: { display: false },
        tooltip: titles ? { callbacks: { title: (items) => titles[items[0].dataIndex] } } : {},
      },
      scales: {
        x: { beginAtZero: true, ticks: numberTicks },
        y: { grid: { display: false }, ticks: { autoSkip: false } },
      },
      onClick: onPick
        ? (_event, elements) => {
            if (elements.length) onPick(elements[0].index);
          }
        : undefined,
      onHover: onPick
        ? (event, elements) => {
            event.native.target.style.cursor = elements.length ? "pointer" : "default";
          }
        : undefined,
    },
  });
}

/** A doughnut with its legend on the right. */
export function doughnut(canvas, labels, values, colors = PALETTE) {
  return draw(canvas, {
    type: "doughnut",
    data: {
      labels,
      datasets: [{ data: values, backgroundColor: labels.map((_, i) => colors[i % colors.length]), borderWidth: 2 }],
    },
    options: {
      cutout: "60%",
      plugins: { legend: { position: "bottom" } },
    },
  });
}
