/**
 * CSV (RFC 4180: quoted fields, doubled quotes, CRLF) to a Dataset. Every column but the
 * label column is a float feature; labels are integer classes, strings (classes in
 * sorted order of their names) or, for regression, float targets. Errors name the row
 * and column.
 */
import { TrainerError } from '../errors.js';
import { classTargets, makeDataset, type Dataset, type Targets } from './dataset.js';

export interface CsvOptions {
  header?: boolean;
  labelColumn?: string | number;
  delimiter?: string;
  task?: 'classification' | 'regression';
  /** Field name used in error messages. */
  field?: string;
}

/** Split CSV text into rows of fields. Blank lines are skipped. */
export function parseCsvRows(text: string, delimiter = ',', field = 'data.path'): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cur = '';
  let quoted = false;
  let wasQuoted = false;
  let line = 1;
  const endField = () => {
    row.push(wasQuoted ? cur : cur.trim());
    cur = '';
    wasQuoted = false;
  };
  const endRow = () => {
    endField();
    if (!(row.length === 1 && row[0] === '')) rows.push(row);
    row = [];
  };
  const start = text.charCodeAt(0) === 0xfeff ? 1 : 0; // byte-order mark
  for (let i = start; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cur += '"';
          i++;
        } else quoted = false;
      } else {
        if (ch === '\n') line++;
        cur += ch;
      }
    } else if (ch === '"' && cur.trim() === '') {
      quoted = true;
      wasQuoted = true;
      cur = '';
    } else if (ch === delimiter) endField();
    else if (ch === '\n') {
      endRow();
      line++;
    } else if (ch === '\r' && text[i + 1] === '\n') continue;
    else cur += ch;
  }
  if (quoted) throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: unterminated quoted field (opened before line ${line})`, field);
  if (cur !== '' || row.length) endRow();
  return rows;
}

export function csvToDataset(text: string, o: CsvOptions = {}): Dataset {
  const field = o.field ?? 'data.path';
  const fail = (msg: string): never => {
    throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: ${msg}`, field);
  };
  const rows = parseCsvRows(text, o.delimiter ?? ',', field);
  const header = o.header ?? true;
  const names = header ? rows.shift() : undefined;
  if (!rows.length) fail('the CSV holds no data rows');
  const width = names?.length ?? rows[0].length;
  if (width < 2) fail(`the CSV has ${width} column; it needs at least one feature and one label column`);

  let label = width - 1;
  if (typeof o.labelColumn === 'string') {
    if (!names) throw new TrainerError('TAS_ERR_INVALID_SPEC', `data.label_column: "${o.labelColumn}" is a name but the CSV has no header (header: false); give an index`, 'data.label_column');
    label = names.indexOf(o.labelColumn);
    if (label < 0) throw new TrainerError('TAS_ERR_INVALID_SPEC', `data.label_column: no column "${o.labelColumn}" in the header (${names.join(', ')})`, 'data.label_column');
  } else if (typeof o.labelColumn === 'number') {
    label = o.labelColumn < 0 ? width + o.labelColumn : o.labelColumn;
    if (!Number.isInteger(label) || label < 0 || label >= width) {
      throw new TrainerError('TAS_ERR_INVALID_SPEC', `data.label_column: index ${o.labelColumn} outside the ${width} columns`, 'data.label_column');
    }
  }
  const colName = (c: number) => (names ? `"${names[c]}"` : `${c}`);
  const features = width - 1;
  const x = new Float32Array(rows.length * features);
  const rawLabels: string[] = new Array<string>(rows.length);
  const firstRow = header ? 2 : 1;
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    if (row.length !== width) fail(`row ${r + firstRow} has ${row.length} fields, expected ${width}`);
    let j = 0;
    for (let c = 0; c < width; c++) {
      if (c === label) {
        rawLabels[r] = row[c];
        continue;
      }
      const v = row[c] === '' ? NaN : Number(row[c]);
      if (!Number.isFinite(v)) fail(`row ${r + firstRow}, column ${colName(c)}: "${row[c]}" is not a finite number`);
      x[r * features + j++] = v;
    }
  }

  let targets: Targets;
  if (o.task === 'regression') {
    const values = new Float32Array(rows.length);
    for (let r = 0; r < rows.length; r++) {
      const v = rawLabels[r] === '' ? NaN : Number(rawLabels[r]);
      if (!Number.isFinite(v)) fail(`row ${r + firstRow}, column ${colName(label)}: target "${rawLabels[r]}" is not a finite number`);
      values[r] = v;
    }
    targets = { kind: 'values', values, targetDim: 1 };
  } else if (rawLabels.every((s) => /^\d+$/.test(s))) {
    targets = classTargets(rawLabels.map(Number), field);
  } else {
    const classNames = [...new Set(rawLabels)].sort();
    const index = new Map(classNames.map((n, i) => [n, i]));
    targets = { kind: 'classes', labels: Int32Array.from(rawLabels, (s) => index.get(s)!), numClasses: classNames.length, classNames };
  }
  return makeDataset(x, [features], targets, field);
}
