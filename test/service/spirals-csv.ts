/** Two interleaved spirals in the plane as a CSV dataset (header x1,x2,y), for jobs that read an uploaded file. */
export function spiralsCsv(n: number): string {
  const rows = ['x1,x2,y'];
  for (let i = 0; i < n; i++) {
    const c = i % 2;
    const t = (i / n) * 3 * Math.PI;
    const r = 0.2 + t / (3 * Math.PI);
    rows.push(`${(r * Math.cos(t + c * Math.PI)).toFixed(5)},${(r * Math.sin(t + c * Math.PI)).toFixed(5)},${c}`);
  }
  return rows.join('\n') + '\n';
}
