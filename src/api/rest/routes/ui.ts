/**
 * The dashboard's static files (built from ui/src into ui/dist by `npm ci`), served at
 * /ui/; `/`, `/ui` and `/dashboard` redirect there. The files are read into memory at
 * start (a few hundred KiB with their compressed copies) and sent as built:
 * content-hashed assets are immutable for a year, index.html is revalidated on every
 * load (no-cache, ETag), each with the precompressed copy the client accepts. The
 * dashboard is a client of the public REST API like any other; nothing here is private.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../http-errors.js';

/** Where `npm ci` builds the dashboard. */
export const DEFAULT_UI_DIR = fileURLToPath(new URL('../../../../ui/dist/', import.meta.url));

export interface UiRouteOptions {
  /** The built dashboard. @defaultValue ui/dist of this checkout */
  readonly dir?: string;
}

interface StaticFile {
  readonly type: string;
  readonly etag: string;
  readonly immutable: boolean;
  readonly identity: Buffer;
  readonly gzip: Buffer | null;
  readonly brotli: Buffer | null;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * The page may load only its own scripts and styles and talk only to this origin (style
 * attributes are allowed: the chart library positions its parts with them).
 */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** Every built file by its path under /ui/ ("index.html", "assets/app-HASH.js"). */
async function loadFiles(dir: string): Promise<Map<string, StaticFile> | null> {
  if (!(await stat(join(dir, 'index.html')).then((s) => s.isFile(), () => false))) return null;
  const out = new Map<string, StaticFile>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      if (e.isDirectory()) await walk(full);
      else if (!e.name.endsWith('.gz') && !e.name.endsWith('.br')) {
        const identity = await readFile(full);
        const path = relative(dir, full).split('\\').join('/');
        out.set(path, {
          type: TYPES[extname(e.name)] ?? 'application/octet-stream',
          etag: `"${createHash('sha1').update(identity).digest('base64url')}"`,
          immutable: path.startsWith('assets/'),
          identity,
          gzip: await readFile(`${full}.gz`).catch(() => null),
          brotli: await readFile(`${full}.br`).catch(() => null),
        });
      }
    }
  };
  await walk(dir);
  return out;
}

function send(request: FastifyRequest, reply: FastifyReply, file: StaticFile): FastifyReply {
  void reply
    .header('content-type', file.type)
    .header('etag', file.etag)
    .header('vary', 'accept-encoding')
    .header('x-content-type-options', 'nosniff')
    .header('cache-control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
  if (file.type.startsWith('text/html')) void reply.header('content-security-policy', CSP).header('referrer-policy', 'no-referrer');
  const seen = request.headers['if-none-match'];
  if (seen !== undefined && seen.split(',').some((t) => t.trim() === file.etag || t.trim() === `W/${file.etag}`)) return reply.code(304).send();
  const accepts = String(request.headers['accept-encoding'] ?? '');
  const [encoding, body] = file.brotli && /\bbr\b/.test(accepts) ? ['br', file.brotli] : file.gzip && /\bgzip\b/.test(accepts) ? ['gzip', file.gzip] : [null, file.identity];
  if (encoding) void reply.header('content-encoding', encoding);
  return reply.send(body);
}

export const uiRoutes: FastifyPluginAsync<UiRouteOptions> = async (app, options) => {
  const dir = options.dir ?? DEFAULT_UI_DIR;
  const files = await loadFiles(dir);
  const hide = { hide: true } as const;
  const toUi = async (_: FastifyRequest, reply: FastifyReply) => reply.redirect('/ui/', 302);
  app.get('/', { schema: hide }, toUi);
  app.get('/dashboard', { schema: hide }, toUi);
  app.get('/ui', { schema: hide }, async (_, reply) => reply.redirect('/ui/', 301));
  app.get<{ Params: { '*': string } }>('/ui/*', { schema: hide }, async (request, reply) => {
    if (!files) throw new ApiError('TAS_ERR_UNAVAILABLE', `the dashboard is not built (no ${join(dir, 'index.html')}): run npm run build:ui`);
    const path = request.params['*'] || 'index.html';
    const file = files.get(path);
    if (!file) throw new ApiError('TAS_ERR_NOT_FOUND', `no dashboard file /ui/${path}`);
    return send(request, reply, file);
  });
};
