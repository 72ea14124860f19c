/**
 * The local workers of a pool, supervised: one process per device, registered with the
 * registry; a worker that dies (a crash, an OOM kill, SIGKILL) is marked offline at once
 * and replaced by a fresh process on the same device, which registers under its new
 * address. The job it served fails its attempt fast (the collective notices) and
 * restarts from its checkpoint on a fresh gang.
 */
import { assignDevices, type DeviceAssignment } from './device.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import { startLocalWorker, stopLocalWorkers, type LocalWorker } from './pool.js';
import type { WorkerRegistry } from './registry.js';

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
    private readonly registry: WorkerRegistry,
    private readonly o: LocalPoolOptions,
  ) {}

  /** Start `count` workers (default: one per GPU, else 2 CPU workers) and register them. */
  static async start(count: number | undefined, registry: WorkerRegistry, o: LocalPoolOptions = {}): Promise<LocalPool> {
    const pool = new LocalPool(registry, o);
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

  async stop(): Promise<void> {
    this.stopping = true;
    const all = this.list();
    await Promise.all(all.map((w) => this.registry.remove(w.address).catch(() => undefined)));
    await stopLocalWorkers(all);
  }

  private async spawn(slot: number, device: DeviceAssignment): Promise<void> {
    const w = await startLocalWorker(device, { ...(this.o.host ? { host: this.o.host } : {}), ...(this.o.tls ? { tls: this.o.tls } : {}), hostWorkers: this.hostWorkers });
    this.workers.set(slot, w);
    w.process.once('exit', (code, signal) => void this.onExit(slot, w, code, signal));
    await this.registry.add(w.address);
    this.o.log?.(`worker ${w.address} (${device.kind} ${device.index}, pid ${w.process.pid}) ready`);
  }

  private async onExit(slot: number, w: LocalWorker, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (this.stopping) return;
    this.o.log?.(`worker ${w.address} exited (${signal ?? `code ${code}`})`);
    await this.registry.remove(w.address).catch(() => undefined);
    if (this.o.respawn === false) return;
    try {
      await this.spawn(slot, w.device);
    } catch (e) {
      this.o.log?.(`could not replace worker ${w.address}: ${(e as Error).message}`);
    }
  }
}
