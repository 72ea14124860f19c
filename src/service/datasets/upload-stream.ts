/**
 * Copies an upload stream to a file with a byte limit, hashing as it goes. Memory stays
 * at a few chunks whatever the upload's size: the source is paused while the file
 * stream is full (backpressure), and nothing is buffered beyond that.
 *
 * Why not `stream.pipeline`: on an error it destroys the source, and destroying an HTTP
 * request destroys its socket, so the client would never see the 413. Here the source is
 * only paused and detached when the limit is passed; whoever owns it (the HTTP layer)
 * answers and closes the connection.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DatasetError } from './dataset-errors.js';

export interface ReceivedFile {
  readonly bytes: number;
  /** Hex SHA-256 of the bytes written. */
  readonly sha256: string;
}

/**
 * Streams `source` into a new file at `path` (which must not exist). Rejects with
 * DatasetError TAS_ERR_PAYLOAD_TOO_LARGE as soon as more than `maxBytes` arrived; on that
 * or any other failure (the client went away, the disk is full) the partial file is
 * removed before the promise settles.
 */
export async function receiveToFile(source: Readable, path: string, maxBytes: number): Promise<ReceivedFile> {
  const out = createWriteStream(path, { flags: 'wx' });
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const detach = () => {
        source.off('data', onData);
        source.off('end', onEnd);
        source.off('error', onError);
        source.off('close', onClose);
        out.off('error', onError);
        out.off('drain', onDrain);
      };
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        detach();
        source.pause();
        reject(err);
      };
      const onData = (chunk: Buffer | string) => {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        bytes += buf.length;
        if (bytes > maxBytes) {
          fail(new DatasetError('TAS_ERR_PAYLOAD_TOO_LARGE', `the upload is larger than the limit of ${maxBytes} bytes`));
          return;
        }
        hash.update(buf);
        if (!out.write(buf)) source.pause();
      };
      const onDrain = () => source.resume();
      const onEnd = () => {
        if (settled) return;
        settled = true;
        detach();
        out.once('error', reject);
        out.end(() => resolve());
      };
      const onError = (err: Error) => fail(err);
      // A request whose client goes away closes without 'end' (and, depending on timing,
      // without 'error'): the upload is incomplete either way.
      const onClose = () => fail(new Error(`the upload ended after ${bytes} bytes without completing (client disconnected)`));
      if (source.readableEnded) {
        onEnd();
        return;
      }
      source.on('data', onData);
      source.once('end', onEnd);
      source.once('error', onError);
      source.once('close', onClose);
      out.on('error', onError);
      out.on('drain', onDrain);
      source.resume();
    });
  } catch (err) {
    // Destroying the file stream fails a write still in flight with an 'error' event
    // (ERR_STREAM_DESTROYED); unheard, that event would take the process down.
    out.on('error', () => undefined);
    out.destroy();
    await new Promise<void>((r) => (out.closed ? r() : out.once('close', () => r())));
    // 'wx' refused an existing file: not ours to remove.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') await rm(path, { force: true });
    throw err;
  }
  return { bytes, sha256: hash.digest('hex') };
}
