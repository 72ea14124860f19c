// A uPlot chart as a component: created once, fed new data in place (no flicker as a
// job's curves grow), sized to its box. The caption says in words what the canvas shows
// (series, points, latest values), for people and for tests.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartProps {
  title: string;
  /** uPlot options without width/height (set from the box). */
  options: Omit<uPlot.Options, 'width' | 'height'>;
  data: uPlot.AlignedData;
  height?: number;
  caption?: ComponentChildren;
}

export function Chart({ title, options, data, height = 200, caption }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // Series layout changes (a layer appears) rebuild the chart; new points only set data.
  const shape = JSON.stringify(options.series.map((s) => s.label ?? '')) + String(options.scales ? Object.keys(options.scales) : '');
  useEffect(() => {
    const el = box.current!;
    const width = Math.max(200, el.clientWidth);
    const u = new uPlot({ ...options, width, height }, data, el);
    plot.current = u;
    const observer = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    observer.observe(el);
    return () => {
      observer.disconnect();
      u.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- rebuilt on a new shape only
  }, [shape, height]);
  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);
  const points = data[0]?.length ?? 0;
  return (
    <figure class="chart" aria-label={title}>
      <figcaption>
        <strong>{title}</strong> <span class="muted">{points === 1 ? '1 point' : `${points} points`}</span> {caption}
      </figcaption>
      <div ref={box} class="plot" role="img" aria-label={`${title}: ${points} points`} />
    </figure>
  );
}

/** A vertical dashed line with a label at x = `at` (e.g. where recalibration happened). */
export function markerPlugin(at: number | null, label: string): uPlot.Plugin {
  return {
    hooks: {
      draw: (u) => {
        if (at === null) return;
        const x = u.valToPos(at, 'x', true);
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = '#b45309';
        ctx.fillStyle = '#b45309';
        ctx.setLineDash([4, 4]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
        ctx.textAlign = 'right';
        ctx.fillText(label, x - 4 * devicePixelRatio, u.bbox.top + 12 * devicePixelRatio);
        ctx.restore();
      },
    },
  };
}

export const COLORS = {
  loss: '#dc2626',
  accuracy: '#2563eb',
  lr: '#7c3aed',
  speed: '#059669',
  compute: '#64748b',
  bnFwd: '#f59e0b',
  bnBwd: '#ea580c',
  grad: '#0891b2',
  final: '#b45309',
};
