/** Client side of the Worker service: what the pool (scheduler) calls, with this process's TAS_WORKER_TOKEN. */
import * as grpc from '@grpc/grpc-js';
import { TrainerError } from '../trainer/errors.js';
import type { DoneMsg, RunEventMsg, RunRequestMsg, StepMsg, WorkerInfoMsg } from './messages.js';
import { channelCredentials, type TlsFiles } from '../grpc/tls-files.js';
import { workerProto } from '../grpc/proto.js';
import { workerCallMetadata } from './worker-token.js';

interface RawWorkerClient extends grpc.Client {
  Info(req: object, metadata: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: WorkerInfoMsg) => void): void;
  Run(req: RunRequestMsg, metadata: grpc.Metadata): grpc.ClientReadableStream<RunEventMsg>;
  Cancel(req: { job_id: string }, metadata: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: { cancelled: boolean }) => void): void;
}

export class WorkerClient {
  private readonly raw: RawWorkerClient;

  constructor(
    readonly address: string,
    tls?: TlsFiles,
  ) {
    const { Client } = workerProto();
    this.raw = new Client(address, channelCredentials(tls)) as unknown as RawWorkerClient;
  }

  info(deadlineMs = 5000): Promise<WorkerInfoMsg> {
    return new Promise((resolve, reject) =>
      this.raw.waitForReady(Date.now() + deadlineMs, (err) => {
        if (err) return reject(new TrainerError('TAS_ERR_COLLECTIVE', `worker ${this.address} unreachable: ${err.message}`));
        this.raw.Info({}, workerCallMetadata(), (e, res) => (e ? reject(e) : resolve(res)));
      }),
    );
  }

  /** Run one rank; resolves with Done, rejects with the worker's error (status code kept). */
  run(req: RunRequestMsg, onStep?: (s: StepMsg) => void): Promise<DoneMsg> {
    return new Promise((resolve, reject) => {
      const stream = this.raw.Run(req, workerCallMetadata());
      let done: DoneMsg | null = null;
      stream.on('data', (ev: RunEventMsg) => {
        if (ev.step && ev.event === 'step') onStep?.(ev.step);
        if (ev.done && ev.event === 'done') done = ev.done;
      });
      stream.on('error', (e: grpc.ServiceError) => reject(e));
      stream.on('end', () => (done ? resolve(done) : reject(new TrainerError('TAS_ERR_COLLECTIVE', `worker ${this.address} (rank ${req.rank}) ended without a result`))));
    });
  }

  cancel(jobId: string): Promise<boolean> {
    return new Promise((resolve) => this.raw.Cancel({ job_id: jobId }, workerCallMetadata(), (e, res) => resolve(!e && res.cancelled)));
  }

  close(): void {
    this.raw.close();
  }
}
