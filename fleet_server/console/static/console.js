// The experiment chart: each arm's p50 and p95 latency per telemetry window, drawn with uPlot
// from the page's series.json, refreshed every 2 s while the experiment runs.
(function () {
  "use strict";
  const el = document.getElementById("chart");
  if (!el || typeof uPlot === "undefined") return;
  let plot = null;

  function merge(series) {
    // one x axis for both arms: the union of their window times, gaps where an arm has none
    const a = series.arms.a, b = series.arms.b;
    const xs = Array.from(new Set([...a.t, ...b.t])).sort((x, y) => x - y);
    const pick = (arm, key) => {
      const at = new Map(arm.t.map((t, i) => [t, arm[key][i]]));
      return xs.map((t) => (at.has(t) ? at.get(t) : null));
    };
    return {
      labels: ["A v" + a.version, "B v" + b.version],
      data: [xs, pick(a, "p50"), pick(a, "p95"), pick(b, "p50"), pick(b, "p95")],
      points: a.t.length + b.t.length,
    };
  }

  function draw(m) {
    const width = Math.max(280, el.clientWidth || 600);
    if (plot === null) {
      plot = new uPlot(
        {
          width: width,
          height: 300,
          scales: { x: { time: true } },
          // the tables show UTC; so does the chart
          tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
          axes: [{}, { label: "ms" }],
          series: [
            {},
            { label: m.labels[0] + " p50", stroke: "#0b5cad", width: 2, spanGaps: true },
            { label: m.labels[0] + " p95", stroke: "#0b5cad", dash: [6, 4], spanGaps: true },
            { label: m.labels[1] + " p50", stroke: "#c2410c", width: 2, spanGaps: true },
            { label: m.labels[1] + " p95", stroke: "#c2410c", dash: [6, 4], spanGaps: true },
          ],
        },
        m.data,
        el
      );
      window.addEventListener("resize", () => plot.setSize({ width: Math.max(280, el.clientWidth), height: 300 }));
    } else {
      plot.setData(m.data);
    }
    el.dataset.points = String(m.points);
  }

  async function refresh() {
    try {
      const res = await fetch(el.dataset.series, { credentials: "same-origin" });
      if (res.ok) draw(merge(await res.json()));
    } catch (e) {
      // the next refresh tries again
    }
  }

  refresh();
  if (el.dataset.live === "yes") setInterval(refresh, 2000);
})();
