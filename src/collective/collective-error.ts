/**
 * The collective's one error: a `TrainerError` with code TAS_ERR_COLLECTIVE (the trainer's
 * catalogue), so the trainer, the pool and the service handle a failed collective like any
 * other training failure, plus the rank to blame when there is one.
 */
import { TrainerError } from '../trainer/errors.js';

/** A failed collective: TAS_ERR_COLLECTIVE, with the failed rank when one is to blame. */
export class CollectiveError extends TrainerError {
  /** The message as first raised (ABORT frames carry this, not the "reported by" suffix). */
  readonly origin: string;
  constructor(
    message: string,
    readonly failedRank?: number,
    origin?: string,
  ) {
    super('TAS_ERR_COLLECTIVE', message);
    this.origin = origin ?? message;
  }
}
