/* A small time-series line chart on <canvas>, written for the outbox dashboard.
 * Part of outbox-app (MIT licence, like the package); no third-party code.
 *
 *   const chart = new LineChart(canvas, {windowS: 300, series: [{key, label, color, fill, dash}]});
 *   chart.setData(points, nowSeconds);   // points: [{t, key: value|null, ...}], t in seconds
 *
 * A null value breaks the line (no data for that moment). After each draw the canvas
 * carries data-points (how many samples are in view) and data-drawn="1".
 */
(function (global) {
  "use strict";

  const PAD = { left: 46, right: 12, top: 10, bottom: 22 };
  const GRID = "rgba(100, 116, 139, 0.18)";
  const AXIS_TEXT = "#64748b";

  // A round step so the y axis reads 0, 5, 10 ... rather than 0, 4.37, 8.74.
  function niceTop(max) {
    if (!(max > 0)) return { top: 1, step: 0.25 };
    const rough = max / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= rough);
    return { top: Math.ceil(max / step) * step, step };
  }

  function formatValue(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    if (a >= 10 || Number.isInteger(v)) return String(Math.round(v));
    return v.toFixed(1);
  }

  function ago(s) {
    if (s === 0) return "now";
    const m = Math.floor(s / 60);
    const rest = s % 60;
    return "−" + (m ? `${m}m` : "") + (rest ? `${rest}s` : "");
  }

  class LineChart {
    constructor(canvas, options) {
      this.canvas = canvas;
      this.series = options.series;
      this.windowS = options.windowS || 300;
      this.points = [];
      this.now = Date.now() / 1000;
      this.hoverX = null;
      if (global.ResizeObserver) new ResizeObserver(() => this.draw()).observe(canvas);
      canvas.addEventListener("mousemove", (e) => {
        this.hoverX = e.offsetX;
        this.draw();
      });
      canvas.addEventListener("mouseleave", () => {
        this.hoverX = null;
        this.draw();
      });
    }

    setData(points, now) {
      this.points = points;
      this.now = now;
      this.draw();
    }

    draw() {
      const c = this.canvas;
      const w = c.clientWidth;
      const h = c.clientHeight;
      if (!w || !h) return;
      const dpr = global.devicePixelRatio || 1;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);

      const x0 = PAD.left;
      const x1 = w - PAD.right;
      const yBase = h - PAD.bottom;
      const yTop = PAD.top;
      // The window grows with the history, from a minute up to windowS, so a freshly
      // opened dashboard is not a mostly empty chart.
      const tMax = this.now;
      const first = this.points.length ? this.points[0].t : tMax;
      const span = Math.min(this.windowS, Math.max(60, Math.ceil((tMax - first) / 30) * 30));
      const tMin = tMax - span;
      const inView = this.points.filter((p) => p.t >= tMin && p.t <= tMax + 1);

      let max = 0;
      for (const p of inView) {
        for (const s of this.series) {
          const v = p[s.key];
          if (typeof v === "number" && v > max) max = v;
        }
      }
      const { top, step } = niceTop(max);
      const x = (t) => x0 + ((t - tMin) / (tMax - tMin)) * (x1 - x0);
      const y = (v) => yBase - (v / top) * (yBase - yTop);

      // Grid and axes.
      ctx.font = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";
      ctx.lineWidth = 1;
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let v = 0; v <= top + step / 2; v += step) {
        const yy = Math.round(y(v)) + 0.5;
        ctx.strokeStyle = GRID;
        ctx.beginPath();
        ctx.moveTo(x0, yy);
        ctx.lineTo(x1, yy);
        ctx.stroke();
        ctx.fillStyle = AXIS_TEXT;
        ctx.fillText(formatValue(v), x0 - 6, yy);
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      const tick = span <= 90 ? 15 : span <= 180 ? 30 : 60;
      for (let back = Math.floor(span / tick) * tick; back >= 0; back -= tick) {
        const xx = x(tMax - back);
        ctx.fillStyle = AXIS_TEXT;
        ctx.fillText(ago(back), Math.min(Math.max(xx, x0 + 10), x1 - 12), yBase + 6);
      }

      // Series: a soft area under the filled ones, then the lines on top.
      for (const s of this.series) {
        const runs = [];
        let run = [];
        for (const p of inView) {
          const v = p[s.key];
          if (typeof v === "number") run.push([x(p.t), y(v)]);
          else if (run.length) {
            runs.push(run);
            run = [];
          }
        }
        if (run.length) runs.push(run);
        for (const r of runs) {
          if (s.fill && r.length > 1) {
            ctx.beginPath();
            ctx.moveTo(r[0][0], yBase);
            for (const [px, py] of r) ctx.lineTo(px, py);
            ctx.lineTo(r[r.length - 1][0], yBase);
            ctx.closePath();
            ctx.globalAlpha = 0.14;
            ctx.fillStyle = s.color;
            ctx.fill();
            ctx.globalAlpha = 1;
          }
          ctx.beginPath();
          r.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
          ctx.strokeStyle = s.color;
          ctx.lineWidth = 2;
          ctx.lineJoin = "round";
          ctx.setLineDash(s.dash || []);
          ctx.stroke();
          ctx.setLineDash([]);
          if (r.length === 1) {
            ctx.fillStyle = s.color;
            ctx.fillRect(r[0][0] - 1.5, r[0][1] - 1.5, 3, 3);
          }
        }
      }
      this.drawHover(ctx, inView, x, y, yTop, yBase);
      c.dataset.points = String(inView.length);
      c.dataset.drawn = "1";
    }

    // A crosshair with the values of the nearest sample under the mouse.
    drawHover(ctx, inView, x, y, yTop, yBase) {
      if (this.hoverX === null || !inView.length) return;
      let best = inView[0];
      for (const p of inView) {
        if (Math.abs(x(p.t) - this.hoverX) < Math.abs(x(best.t) - this.hoverX)) best = p;
      }
      const bx = Math.round(x(best.t)) + 0.5;
      ctx.strokeStyle = "rgba(15, 23, 42, 0.35)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(bx, yTop);
      ctx.lineTo(bx, yBase);
      ctx.stroke();
      const ago = Math.max(0, Math.round(this.now - best.t));
      const lines = [ago ? `${ago}s ago` : "now"].concat(
        this.series.map((s) => {
          const v = best[s.key];
          return `${s.label}: ${typeof v === "number" ? formatValue(v) : "–"}`;
        })
      );
      ctx.font = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";
      const boxW = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 14;
      const boxH = lines.length * 15 + 8;
      const bxLeft = bx + 8 + boxW > this.canvas.clientWidth ? bx - 8 - boxW : bx + 8;
      ctx.fillStyle = "rgba(15, 23, 42, 0.88)";
      ctx.fillRect(bxLeft, yTop, boxW, boxH);
      ctx.fillStyle = "#f8fafc";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      lines.forEach((l, i) => ctx.fillText(l, bxLeft + 7, yTop + 5 + i * 15));
      for (const s of this.series) {
        const v = best[s.key];
        if (typeof v !== "number") continue;
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(bx, y(v), 3.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }

  LineChart.formatValue = formatValue;
  global.LineChart = LineChart;
})(window);
