/**
 * The collective interface the trainer talks to. Transport-free: an in-process group
 * (tests, several ranks in one process) and the gRPC transport (worker processes)
 * implement it alike.
 *
 * Contract, as torch.distributed has it:
 * - every rank calls the same collectives in the same order (the i-th call on each rank
 *   is one collective); a rank with no data still calls, with zero-filled buffers;
 * - results are identical on every rank, bit for bit: reductions sum in rank order;
 * - a failed peer fails the call on every rank with an error naming the rank.
 */
export interface Collective {
  readonly rank: number;
  readonly worldSize: number;
  /** Every rank's buffer, in rank order. Buffers may differ in length between ranks. */
  allGather(data: Float32Array): Promise<Float32Array[]>;
  /** Element-wise sum over ranks (rank order), the same length on every rank; a new array. */
  allReduce(data: Float32Array): Promise<Float32Array>;
  /**
   * The same sum, written into `data` (torch.distributed.all_reduce's in-place form): no
   * result array to allocate. The caller must neither read nor write `data` until the
   * promise settles; on failure its contents are unspecified.
   */
  allReduceInPlace(data: Float32Array): Promise<void>;
  /** `data` of the root, on every rank (others pass a buffer of the same length). */
  broadcast(data: Float32Array, root: number): Promise<Float32Array>;
  barrier(): Promise<void>;
  close(): Promise<void>;
}

/** Collective of a single rank: every operation is the identity. */
export class SoloCollective implements Collective {
  readonly rank = 0;
  readonly worldSize = 1;
  async allGather(data: Float32Array): Promise<Float32Array[]> {
    return [data];
  }
  async allReduce(data: Float32Array): Promise<Float32Array> {
    return data;
  }
  async allReduceInPlace(): Promise<void> {}
  async broadcast(data: Float32Array): Promise<Float32Array> {
    return data;
  }
  async barrier(): Promise<void> {}
  async close(): Promise<void> {}
}
