/**
 * The local workers of a pool, supervised: one process per device, each announced to a
 * `WorkerDirectory` (the scheduler's worker registry, which keeps them in the database);
 * a worker that dies (a crash, an OOM kill, SIGKILL) is marked offline at once
 * and replaced by a fresh process on the same device, which registers under its new
 * address. The job it served fails its attempt fast (the collective notices) and
 * restarts from its checkpoint on a fresh gang.
 */
import { assignDevices, type DeviceAssignment } from './device.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import { startLocalWorker, stopLocalWorkers, type LocalWorker } from './pool.js';
import { ENGINE_FAILURE_EXIT_CODE } from './worker-service.js';

/**
 * Where the pool announces its workers: the service's worker registry implements it. The
 * pool owns this interface so that it needs nothing from the layers above it.
 */
export interface WorkerDirectory {
  /** A worker is up at `address` (the directory probes it and records it). */
  add(address: string): Promise<unknown>;
  /** The worker at `address` is gone (stopped, or its process exited). */
  remove(address: string): Promise<unknown>;
}

export interface LocalPoolOptions {
  readonly host?: string;
  readonly tls?: TlsFiles;
  readonly log?: (message: string) => void;
  /** Replace workers that die. @defaultValue true */
  readonly respawn?: boolean;
}

export class LocalPool {
  private readonly workers = new Map<number, LocalWorker>();
  private stopping = false;
  /** How many workers this host runs (picks their GC flags). */
  private hostWorkers = 1;

  private constructor(
    private readonly directory: WorkerDirectory,
    private readonly options: LocalPoolOptions,
  ) {}

  /** Start `count` workers (default: one per GPU, else 2 CPU workers) and announce them to the directory. */
  static async start(count: number | undefined, directory: WorkerDirectory, options: LocalPoolOptions = {}): Promise<LocalPool> {
    const pool = new LocalPool(directory, options);
    const devices = assignDevices(count);
    pool.hostWorkers = devices.length;
    try {
      await Promise.all(devices.map((d, slot) => pool.spawn(slot, d)));
    } catch (e) {
      await pool.stop();
      throw e;
    }
    return pool;
  }

  /** The current workers, by slot. */
  list(): LocalWorker[] {
    return [...this.workers.entries()].sort((a, b) => a[0] - b[0]).map(([, w]) => w);
  }

  /** From now on a worker that exits is not replaced (the first step of stopping the service). */
  stopRespawning(): void {
    this.stopping = true;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const all = this.list();
    await Promise.all(all.map((w) => this.directory.remove(w.address).catch(() => undefined)));
    await stopLocalWorkers(all);
  }

  private async spawn(slot: number, device: DeviceAssignment): Promise<void> {
    const w = await startLocalWorker(device, { ...(this.options.host ? { host: this.options.host } : {}), ...(this.options.tls ? { tls: this.options.tls } : {}), hostWorkers: this.hostWorkers });
    this.workers.set(slot, w);
    w.process.once('exit', (code, signal) => void this.onExit(slot, w, code, signal));
    await this.directory.add(w.address);
    this.options.log?.(`worker ${w.address} (${device.kind} ${device.index}, pid ${w.process.pid}) ready`);
  }

  private async onExit(slot: number, w: LocalWorker, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (this.stopping) return;
    const why = code === ENGINE_FAILURE_EXIT_CODE ? 'its tensor engine failed' : signal ?? `code ${code}`;
    this.options.log?.(`worker ${w.address} exited (${why}); starting a fresh one in its place`);
    await this.directory.remove(w.address).catch(() => undefined);
    if (this.options.respawn === false) return;
    try {
      await this.spawn(slot, w.device);
    } catch (e) {
      this.options.log?.(`could not replace worker ${w.address}: ${(e as Error).message}`);
    }
  }
}
