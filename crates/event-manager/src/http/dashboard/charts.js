// @ts-check
/**
 * Throughput charts: rates computed in the browser from the counters `/stats` reports
 * (published per event type; processed, failed and dead-lettered per handler), kept for the
 * last 15 minutes and drawn as small hand-written SVG line charts.
 */

/** How far back the charts reach. */
export const WINDOW_MS = 15 * 60 * 1000;
/** The charts draw this many buckets across the window (5 s each). */
const BUCKETS = 180;
const BUCKET_MS = WINDOW_MS / BUCKETS;
const WIDTH = 300;
const HEIGHT = 60;
const SVG = "http://www.w3.org/2000/svg";

/** @typedef {{ t: number, delta: number }} Step  events counted between two samples, at `t` */

/** Counters sampled over time, kept as the steps between samples. */
export class Throughput {
  constructor() {
    /** @type {Map<string, Step[]>} */
    this.steps = new Map();
    /** @type {Map<string, number>} the last value of each counter */
    this.last = new Map();
    /** the time of the previous sample; 0 before the first */
    this.lastAt = 0;
  }

  /**
   * Records one sample of every counter. A counter seen for the first time after the first
   * sample counts from zero (a new event type's first events show); a counter that went
   * down (a restarted server) counts from its new value.
   * @param {number} t milliseconds since the epoch
   * @param {Map<string, number>} counters
   */
  sample(t, counters) {
    const first = this.lastAt === 0;
    for (const [key, value] of counters) {
      const before = this.last.get(key) ?? (first ? value : 0);
      const delta = value >= before ? value - before : value;
      this.last.set(key, value);
      let steps = this.steps.get(key);
      if (!steps) {
        steps = [];
        this.steps.set(key, steps);
      }
      if (!first) steps.push({ t, delta });
      const cutoff = t - WINDOW_MS - BUCKET_MS;
      while (steps.length > 0 && steps[0].t < cutoff) steps.shift();
    }
    this.lastAt = t;
  }

  /**
   * Events per second in each bucket of the window ending at `now`, oldest first (the
   * average over the bucket's 5 s).
   * @param {string} key
   * @param {number} now
   * @returns {number[]}
   */
  rates(key, now) {
    const start = now - WINDOW_MS;
    const sums = new Array(BUCKETS).fill(0);
    for (const step of this.steps.get(key) ?? []) {
      // A step taken at `now` itself belongs to the newest bucket, not past it.
      const i = Math.min(BUCKETS - 1, Math.floor((step.t - start) / BUCKET_MS));
      if (i >= 0) sums[i] += step.delta;
    }
    // Buckets end at `now`: each covers BUCKET_MS, the newest included.
    return sums.map((sum) => (sum * 1000) / BUCKET_MS);
  }

  /** @param {string} key @returns {number} the counter's latest value */
  total(key) {
    return this.last.get(key) ?? 0;
  }
}

/**
 * @typedef {{ key: string, label: string, className: string }} Line
 * One line of a chart: the counter it draws, its legend and its CSS class.
 */

/**
 * Draws (or redraws) one chart into `svg`, with one path per line.
 * `data-total` is the first line's counter and `data-peak` the highest rate drawn, so that a
 * reader (or a test) can tell an empty chart from one with traffic. The first line is drawn
 * last, on top.
 * @param {SVGSVGElement} svg
 * @param {Throughput} throughput
 * @param {Line[]} lines
 * @param {number} now
 */
export function drawChart(svg, throughput, lines, now) {
  const series = lines.map((line) => throughput.rates(line.key, now));
  const peak = Math.max(0, ...series.flat());
  const top = peak > 0 ? peak * 1.1 : 1;
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.dataset.peak = peak.toFixed(2);
  svg.dataset.total = String(throughput.total(lines[0].key));
  if (svg.childElementCount !== lines.length + 1) {
    svg.replaceChildren(baseline(), ...lines.map(() => document.createElementNS(SVG, "path")));
  }
  lines.forEach((line, n) => {
    const path = /** @type {SVGPathElement} */ (svg.children[lines.length - n]);
    path.setAttribute("class", `line ${line.className}`);
    path.setAttribute("d", pathOf(series[n], top));
  });
}

/** @returns {SVGLineElement} */
function baseline() {
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", "0");
  axis.setAttribute("x2", String(WIDTH));
  axis.setAttribute("y1", String(HEIGHT - 0.5));
  axis.setAttribute("y2", String(HEIGHT - 0.5));
  return axis;
}

/**
 * @param {number[]} values
 * @param {number} top the value at the top edge
 * @returns {string} an SVG path through the values, left to right
 */
function pathOf(values, top) {
  const step = WIDTH / (values.length - 1);
  return values
    .map((v, i) => {
      const x = (i * step).toFixed(1);
      const y = (HEIGHT - 1 - (v / top) * (HEIGHT - 4)).toFixed(1);
      return `${i === 0 ? "M" : "L"}${x} ${y}`;
    })
    .join("");
}

/**
 * A rate for people: `0`, `0.35/s`, `12/s`, `1.2k/s`.
 * @param {number} perSecond
 * @returns {string}
 */
export function formatRate(perSecond) {
  if (perSecond === 0) return "0/s";
  if (perSecond >= 1000) return `${(perSecond / 1000).toFixed(1)}k/s`;
  if (perSecond >= 10) return `${Math.round(perSecond)}/s`;
  return `${perSecond.toFixed(2)}/s`;
}
