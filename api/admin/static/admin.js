// The admin page's few behaviours, without inline scripts (the Content-Security-Policy allows
// only this origin's files): a confirmation before destructive forms, and the charts. (A
// dispatch text's characters and SMS parts, and its preview for the clients, come from the
// server, through htmx: one rule, the service's.)
document.addEventListener("submit", (event) => {
  const asking = event.submitter?.dataset.confirm ?? event.target.closest("form[data-confirm]")?.dataset.confirm;
  if (asking && !window.confirm(asking)) {
    event.preventDefault();
  }
});

// Charts: each canvas names the element whose data-chart holds its JSON (api/admin/charts.py).
// A dispatch's live part replaces that element every few seconds and leaves the canvas, so the
// chart is updated in place (a hover and its tooltip survive).
const charts = new Map();

// `holder.spec` is the chart's data now (the tooltips read it as it changes).
function chartOptions(spec, holder) {
  const percent = spec.unit === "%";
  const valueAxis = spec.horizontal ? "x" : "y";
  const labelAxis = spec.horizontal ? "y" : "x";
  const format = (value) => (value === null || value === undefined ? "no data" : percent ? `${value} %` : `${value}`);
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    indexAxis: spec.horizontal ? "y" : "x",
    interaction: { mode: "index", intersect: false },
    plugins: {
      legend: { display: spec.series.length > 1, position: "bottom", labels: { boxWidth: 12 } },
      tooltip: {
        callbacks: {
          title: (items) => (items.length ? holder.spec.titles[items[0].dataIndex] : ""),
          label: (item) => `${item.dataset.label}: ${format(item.raw)}${percent ? "" : ` ${spec.unit}`}`,
        },
      },
    },
    scales: {
      [labelAxis]: {
        stacked: spec.stacked,
        grid: { display: false },
        title: { display: !!spec.x_title, text: spec.x_title },
        ticks: { autoSkip: true, autoSkipPadding: 16, maxRotation: 0 },
      },
      [valueAxis]: {
        stacked: spec.stacked,
        beginAtZero: true,
        max: percent ? 100 : undefined,
        title: { display: true, text: spec.y_title },
        ticks: { precision: 0, callback: (value) => (percent ? `${value} %` : value) },
      },
    },
  };
}

function datasets(spec) {
  return spec.series.map((series) => ({
    // A share of 0 % is a sliver, not nothing: a blank is an hour without data.
    minBarLength: spec.unit === "%" ? 2 : 0,
    label: series.label,
    data: series.values,
    backgroundColor: series.color,
    borderColor: series.color,
    // Bars keep a sane width whatever the span: a share of their slot, never wider than this.
    maxBarThickness: 36,
    barPercentage: 0.9,
    categoryPercentage: 0.9,
  }));
}

function drawCharts() {
  if (!window.Chart) return;
  for (const canvas of document.querySelectorAll("canvas[data-chart-from]")) {
    const source = document.getElementById(canvas.dataset.chartFrom);
    if (!source) continue;
    const json = source.dataset.chart;
    const known = charts.get(canvas);
    if (known && known.json === json) continue;
    const spec = JSON.parse(json);
    canvas.parentElement.hidden = spec.empty;
    if (spec.horizontal) {
      // A bar per route: the box grows with them (set through the CSSOM, which the CSP allows).
      canvas.parentElement.style.height = `${Math.max(8, 4.5 + 2.2 * spec.labels.length)}rem`;
    }
    if (known) {
      const data = known.chart.data;
      const fresh = datasets(spec);
      data.labels = spec.labels;
      if (data.datasets.length === fresh.length) {
        fresh.forEach((dataset, i) => Object.assign(data.datasets[i], { label: dataset.label, data: dataset.data }));
      } else {
        data.datasets = fresh;
      }
      known.chart.options.plugins.legend.display = fresh.length > 1;
      known.holder.spec = spec;
      known.chart.update("none");
      known.json = json;
      continue;
    }
    const holder = { spec };
    const chart = new window.Chart(canvas, {
      type: "bar",
      data: { labels: spec.labels, datasets: datasets(spec) },
      options: chartOptions(spec, holder),
    });
    charts.set(canvas, { chart, json, holder });
  }
  for (const [canvas, known] of charts) {
    if (!canvas.isConnected) {
      known.chart.destroy();
      charts.delete(canvas);
    }
  }
}

if (window.Chart) {
  window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  window.Chart.defaults.font.size = 13;
  window.Chart.defaults.color = "#5b6474";
}
drawCharts();
document.addEventListener("htmx:afterSettle", drawCharts);
