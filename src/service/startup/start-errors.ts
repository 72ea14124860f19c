/**
 * Errors that stop the service from starting: a dependency that cannot be reached or
 * started, a data directory that another process holds. Each has a stable code (so the
 * CLI and tests tell them apart without parsing messages) and a message written for the
 * operator: what is wrong and how to fix it. They end the command (exit status 1); they
 * never reach a client. docs/ERRORS.md lists them with the others.
 */
export const SERVICE_START_ERROR_CODES = {
  TAS_ERR_REDIS_UNAVAILABLE: 'nothing answers at REDIS_URL and no private redis-server may be started',
  TAS_ERR_REDIS_START_FAILED: 'redis-server was started but did not come up',
  TAS_ERR_DATA_DIR_LOCKED: 'another live process uses this embedded database directory',
  TAS_ERR_EMBEDDED_POSTGRES_FAILED: 'PGlite or its socket server failed to start',
  TAS_ERR_CONFIG: 'a configuration variable with a bad value (`ConfigError`, config.ts)',
} as const;

export type ServiceStartErrorCode = Exclude<keyof typeof SERVICE_START_ERROR_CODES, 'TAS_ERR_CONFIG'>;

export class ServiceStartError extends Error {
  readonly code: ServiceStartErrorCode;
  constructor(code: ServiceStartErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ServiceStartError';
    this.code = code;
  }
}

export function isServiceStartError(err: unknown, code?: ServiceStartErrorCode): err is ServiceStartError {
  return err instanceof ServiceStartError && (code === undefined || err.code === code);
}
