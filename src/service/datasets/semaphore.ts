/**
 * At most `n` tasks at once, the rest waiting in arrival order. A finishing task hands its
 * slot straight to the next waiter, so a newcomer cannot slip in between and exceed `n`.
 * The dataset store uses it to bound its checks: each holds a whole dataset in memory.
 */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly n: number) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`a semaphore needs n >= 1, got ${n}`);
  }

  /** Tasks running now. */
  get running(): number {
    return this.active;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.n) this.active++;
    else await new Promise<void>((r) => this.waiting.push(r)); // the slot is handed over
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
