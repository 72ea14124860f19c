/**
 * In-process collective: N ranks in one process (tests, the golden suite's in-process
 * mode). Each rank's i-th call joins the group's i-th operation; the operation completes
 * when every rank has joined, and its result is computed once, in rank order, and shared.
 */
import { TrainerError } from '../errors.js';
import type { Collective } from './collective.js';

type OpKind = 'allGather' | 'allReduce' | 'broadcast' | 'barrier';

interface PendingOp {
  kind: OpKind;
  root: number;
  inputs: Array<Float32Array | undefined>;
  joined: number;
  resolvers: Array<{ resolve: (r: Float32Array[]) => void; reject: (e: Error) => void }>;
}

export class InProcessGroup {
  readonly worldSize: number;
  private readonly ops = new Map<number, PendingOp>();
  private readonly nextSeq: number[];
  private failure: Error | null = null;

  constructor(worldSize: number) {
    if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
    this.worldSize = worldSize;
    this.nextSeq = new Array<number>(worldSize).fill(0);
  }

  member(rank: number): Collective {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.worldSize) throw new RangeError(`rank ${rank} outside [0, ${this.worldSize})`);
    return new InProcessMember(this, rank);
  }

  /** Fail every pending and future operation (a rank died). */
  abort(err: Error): void {
    this.failure = err;
    for (const op of this.ops.values()) for (const r of op.resolvers) r.reject(err);
    this.ops.clear();
  }

  join(rank: number, kind: OpKind, data: Float32Array | undefined, root: number): Promise<Float32Array[]> {
    if (this.failure) return Promise.reject(this.failure);
    const seq = this.nextSeq[rank]++;
    let op = this.ops.get(seq);
    if (!op) {
      op = { kind, root, inputs: new Array(this.worldSize), joined: 0, resolvers: [] };
      this.ops.set(seq, op);
    } else if (op.kind !== kind || op.root !== root) {
      const err = new TrainerError(
        'TAS_ERR_COLLECTIVE',
        `collective mismatch at call ${seq}: rank ${rank} called ${kind}${kind === 'broadcast' ? `(root ${root})` : ''} while others called ${op.kind}`,
      );
      this.abort(err);
      return Promise.reject(err);
    }
    const pending = op;
    pending.inputs[rank] = data;
    pending.joined++;
    const result = new Promise<Float32Array[]>((resolve, reject) => pending.resolvers.push({ resolve, reject }));
    if (pending.joined === this.worldSize) {
      this.ops.delete(seq);
      try {
        const out = complete(pending);
        for (const r of pending.resolvers) r.resolve(out);
      } catch (e) {
        // The op is no longer in `ops`, so abort() alone would leave its ranks waiting forever.
        for (const r of pending.resolvers) r.reject(e as Error);
        this.abort(e as Error);
      }
    }
    return result;
  }
}

function complete(op: PendingOp): Float32Array[] {
  const inputs = op.inputs as Float32Array[];
  switch (op.kind) {
    case 'allGather':
      return inputs;
    case 'allReduce': {
      const n = inputs[0].length;
      const out = new Float32Array(n);
      for (let r = 0; r < inputs.length; r++) {
        if (inputs[r].length !== n) throw new TrainerError('TAS_ERR_COLLECTIVE', `allReduce length mismatch: rank 0 sent ${n} values, rank ${r} sent ${inputs[r].length}`);
        const a = inputs[r];
        for (let i = 0; i < n; i++) out[i] += a[i];
      }
      return [out];
    }
    case 'broadcast':
      return [inputs[op.root].slice()];
    case 'barrier':
      return [];
  }
}

class InProcessMember implements Collective {
  constructor(
    private readonly group: InProcessGroup,
    readonly rank: number,
  ) {}
  get worldSize(): number {
    return this.group.worldSize;
  }
  async allGather(data: Float32Array): Promise<Float32Array[]> {
    // Each rank gets its own copies, as it would over a wire.
    return (await this.group.join(this.rank, 'allGather', data, -1)).map((a) => a.slice());
  }
  async allReduce(data: Float32Array): Promise<Float32Array> {
    const [sum] = await this.group.join(this.rank, 'allReduce', data, -1);
    return sum.slice();
  }
  async allReduceInPlace(data: Float32Array): Promise<void> {
    const [sum] = await this.group.join(this.rank, 'allReduce', data, -1);
    data.set(sum);
  }
  async broadcast(data: Float32Array, root: number): Promise<Float32Array> {
    const [out] = await this.group.join(this.rank, 'broadcast', data, root);
    return out.slice();
  }
  async barrier(): Promise<void> {
    await this.group.join(this.rank, 'barrier', undefined, -1);
  }
  async close(): Promise<void> {}
}
