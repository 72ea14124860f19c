// loadConfig: defaults, every variable read, and the message of each invalid value.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CONFIG_DEFAULTS, ConfigError, loadConfig } from './config.js';

const CWD = '/srv/tas';

function fails(env: Record<string, string>, variable: string, message: string | RegExp): void {
  assert.throws(
    () => loadConfig(env, CWD),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      assert.equal(err.variable, variable);
      assert.equal(err.code, 'TAS_ERR_CONFIG');
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

describe('loadConfig', () => {
  test('defaults with an empty environment', () => {
    assert.deepEqual(loadConfig({}, CWD), {
      httpPort: 8000,
      grpcPort: 8001,
      host: '127.0.0.1',
      auth: 'off',
      adminToken: null,
      metricsToken: null,
      corsOrigins: [],
      dataDir: '/srv/tas/data',
      databaseUrl: null,
      redisUrl: 'redis://127.0.0.1:6379',
      workers: null,
      workersAt: [],
      maxUploadBytes: 512 * 1024 * 1024,
      collectiveTimeoutMs: 5000,
      queueName: 'tas-jobs',
      probeIntervalMs: 2000,
      lockDurationMs: 30000,
      inferThreads: 1,
      inferMaxRows: 1024,
      inferMaxMessageBytes: 32 * 1024 * 1024,
    });
    assert.equal(CONFIG_DEFAULTS.maxUploadBytes, 536870912);
  });

  test('every variable is read', () => {
    const config = loadConfig(
      {
        TAS_HTTP_PORT: '9000',
        TAS_GRPC_PORT: '9001',
        TAS_HOST: '127.0.0.1',
        TAS_AUTH: 'on',
        TAS_ADMIN_TOKEN: 'admin-token-0123456789',
        TAS_METRICS_TOKEN: 'metrics-token-0123456789',
        TAS_CORS_ORIGINS: 'https://dash.example.com, http://localhost:5173',
        TAS_DATA_DIR: 'var/tas',
        DATABASE_URL: 'postgresql://tas:secret@db:5432/tas?schema=svc',
        REDIS_URL: 'redis://cache:6380/2',
        TAS_WORKERS: '4',
        TAS_WORKERS_AT: 'worker:7070, 10.0.0.5:7071,[::1]:7072,',
        TAS_MAX_UPLOAD_BYTES: '1048576',
        TAS_COLLECTIVE_TIMEOUT_MS: '15000',
        TAS_QUEUE: 'tas-jobs.staging',
        TAS_PROBE_INTERVAL_MS: '500',
        TAS_LOCK_DURATION_MS: '60000',
        TAS_INFER_THREADS: '2',
        TAS_INFER_MAX_ROWS: '64',
        TAS_INFER_MAX_MESSAGE_BYTES: '4MiB',
      },
      CWD,
    );
    assert.deepEqual(config, {
      httpPort: 9000,
      grpcPort: 9001,
      host: '127.0.0.1',
      auth: 'on',
      adminToken: 'admin-token-0123456789',
      metricsToken: 'metrics-token-0123456789',
      corsOrigins: ['https://dash.example.com', 'http://localhost:5173'],
      dataDir: '/srv/tas/var/tas',
      databaseUrl: 'postgresql://tas:secret@db:5432/tas?schema=svc',
      redisUrl: 'redis://cache:6380/2',
      workers: 4,
      workersAt: ['worker:7070', '10.0.0.5:7071', '[::1]:7072'],
      maxUploadBytes: 1048576,
      collectiveTimeoutMs: 15000,
      queueName: 'tas-jobs.staging',
      probeIntervalMs: 500,
      lockDurationMs: 60000,
      inferThreads: 2,
      inferMaxRows: 64,
      inferMaxMessageBytes: 4 * 1024 * 1024,
    });
  });

  test('TAS_AUTH: on unless every listener is on loopback; tokens and CORS origins are checked', () => {
    assert.equal(loadConfig({}, CWD).auth, 'off');
    assert.equal(loadConfig({ TAS_HOST: '0.0.0.0' }, CWD).auth, 'on');
    assert.equal(loadConfig({ TAS_HOST: '10.0.0.5' }, CWD).auth, 'on');
    assert.equal(loadConfig({ TAS_HOST: '::1' }, CWD).auth, 'off');
    assert.equal(loadConfig({ TAS_HOST: 'localhost' }, CWD).auth, 'off');
    assert.equal(loadConfig({ TAS_HOST: '0.0.0.0', TAS_AUTH: 'off' }, CWD).auth, 'off');
    assert.equal(loadConfig({ TAS_AUTH: 'ON' }, CWD).auth, 'on');
    fails({ TAS_AUTH: 'yes' }, 'TAS_AUTH', "TAS_AUTH: must be on or off, got 'yes'");
    fails({ TAS_ADMIN_TOKEN: 'short' }, 'TAS_ADMIN_TOKEN', /at least 16 characters/);
    fails({ TAS_CORS_ORIGINS: 'https://a.example.com/path' }, 'TAS_CORS_ORIGINS', /is not an origin/);
    fails({ TAS_CORS_ORIGINS: '*' }, 'TAS_CORS_ORIGINS', /is not an origin/);
  });

  test('an absolute data directory stays; blank variables count as unset', () => {
    const config = loadConfig({ TAS_DATA_DIR: '/data', DATABASE_URL: '', TAS_WORKERS: '  ', TAS_HTTP_PORT: '' }, CWD);
    assert.equal(config.dataDir, '/data');
    assert.equal(config.databaseUrl, null);
    assert.equal(config.workers, null);
    assert.equal(config.httpPort, 8000);
  });

  test('ports: integers from 0 to 65535, and not both the same', () => {
    assert.equal(loadConfig({ TAS_HTTP_PORT: '0', TAS_GRPC_PORT: '0' }, CWD).httpPort, 0);
    assert.equal(loadConfig({ TAS_GRPC_PORT: ' 65535 ' }, CWD).grpcPort, 65535);
    fails({ TAS_HTTP_PORT: 'abc' }, 'TAS_HTTP_PORT', "TAS_HTTP_PORT: must be an integer from 0 to 65535, got 'abc'");
    fails({ TAS_HTTP_PORT: '65536' }, 'TAS_HTTP_PORT', "TAS_HTTP_PORT: must be an integer from 0 to 65535, got '65536'");
    for (const bad of ['-1', '80.5', '8e3', '0x50', '80 80']) {
      fails({ TAS_GRPC_PORT: bad }, 'TAS_GRPC_PORT', `TAS_GRPC_PORT: must be an integer from 0 to 65535, got '${bad}'`);
    }
    fails({ TAS_GRPC_PORT: '8000' }, 'TAS_GRPC_PORT', "TAS_GRPC_PORT: must differ from TAS_HTTP_PORT (8000), got '8000'");
  });

  test('inference limits: threads and rows are counts of at least one', () => {
    fails({ TAS_INFER_THREADS: '0' }, 'TAS_INFER_THREADS', "TAS_INFER_THREADS: must be an integer from 1 to 256, got '0'");
    fails({ TAS_INFER_MAX_ROWS: '-5' }, 'TAS_INFER_MAX_ROWS', "TAS_INFER_MAX_ROWS: must be an integer from 1 to 1000000, got '-5'");
    fails({ TAS_INFER_MAX_MESSAGE_BYTES: 'lots' }, 'TAS_INFER_MAX_MESSAGE_BYTES', /must be a positive number of bytes/);
  });

  test('TAS_WORKERS is a count of at least one', () => {
    fails({ TAS_WORKERS: '0' }, 'TAS_WORKERS', "TAS_WORKERS: must be an integer from 1 to 1024, got '0'");
    fails({ TAS_WORKERS: 'two' }, 'TAS_WORKERS', "TAS_WORKERS: must be an integer from 1 to 1024, got 'two'");
  });

  test('TAS_WORKERS_AT: host:port addresses, each once', () => {
    fails({ TAS_WORKERS_AT: 'worker' }, 'TAS_WORKERS_AT', /'worker' is not host:port \(a port from 1 to 65535\), got 'worker'$/);
    fails({ TAS_WORKERS_AT: 'a:1,b:99999' }, 'TAS_WORKERS_AT', /'b:99999' is not host:port/);
    fails({ TAS_WORKERS_AT: 'a:0' }, 'TAS_WORKERS_AT', /'a:0' is not host:port/);
    fails({ TAS_WORKERS_AT: 'http://a:1' }, 'TAS_WORKERS_AT', /'http:\/\/a:1' is not host:port/);
    fails({ TAS_WORKERS_AT: 'a:1,a:1' }, 'TAS_WORKERS_AT', /'a:1' is listed twice/);
  });

  test('TAS_MAX_UPLOAD_BYTES: bytes, with optional units', () => {
    assert.equal(loadConfig({ TAS_MAX_UPLOAD_BYTES: '2GiB' }, CWD).maxUploadBytes, 2 * 1024 ** 3);
    assert.equal(loadConfig({ TAS_MAX_UPLOAD_BYTES: '100 MB' }, CWD).maxUploadBytes, 100_000_000);
    assert.equal(loadConfig({ TAS_MAX_UPLOAD_BYTES: '64kib' }, CWD).maxUploadBytes, 65536);
    for (const bad of ['0', '-5', '1.5GiB', '10 parsecs', 'lots']) {
      fails({ TAS_MAX_UPLOAD_BYTES: bad }, 'TAS_MAX_UPLOAD_BYTES', new RegExp(`must be a positive number of bytes .*, got '${bad}'$`));
    }
  });

  test('timeouts and intervals have bounds', () => {
    fails({ TAS_COLLECTIVE_TIMEOUT_MS: '0' }, 'TAS_COLLECTIVE_TIMEOUT_MS', "TAS_COLLECTIVE_TIMEOUT_MS: must be an integer from 1 to 3600000, got '0'");
    fails({ TAS_PROBE_INTERVAL_MS: '5' }, 'TAS_PROBE_INTERVAL_MS', /from 10 to 3600000, got '5'$/);
    fails({ TAS_LOCK_DURATION_MS: '1s' }, 'TAS_LOCK_DURATION_MS', /from 1000 to 86400000, got '1s'$/);
  });

  test('DATABASE_URL: a postgresql URL with a plain schema; the password stays out of the message', () => {
    assert.equal(loadConfig({ DATABASE_URL: 'postgres://u@h/db' }, CWD).databaseUrl, 'postgres://u@h/db');
    fails({ DATABASE_URL: 'not a url' }, 'DATABASE_URL', /^DATABASE_URL: must be a URL postgresql:\/\/.*, got 'not a url'$/);
    fails({ DATABASE_URL: 'mysql://u:hunter2@h/db' }, 'DATABASE_URL', "DATABASE_URL: must start with postgresql:// (unset it for the embedded database), got 'mysql://u:***@h/db'");
    fails({ DATABASE_URL: 'postgresql://u@h/db?schema=a-b' }, 'DATABASE_URL', /schema=a-b must be a plain identifier/);
  });

  test('REDIS_URL: redis:// or rediss:// with a host; the password stays out of the message', () => {
    assert.equal(loadConfig({ REDIS_URL: 'rediss://:pw@cache:6380' }, CWD).redisUrl, 'rediss://:pw@cache:6380');
    fails({ REDIS_URL: 'localhost:6379' }, 'REDIS_URL', /must start with redis:\/\/ or rediss:\/\//);
    fails({ REDIS_URL: 'http://u:pw@cache' }, 'REDIS_URL', "REDIS_URL: must start with redis:// or rediss://, got 'http://u:***@cache'");
    fails({ REDIS_URL: 'redis://' }, 'REDIS_URL', /must (name a host|be a URL)/);
  });

  test('TAS_QUEUE: a BullMQ-safe name; TAS_HOST: no spaces or slashes', () => {
    fails({ TAS_QUEUE: 'tas:jobs' }, 'TAS_QUEUE', /no :.*, got 'tas:jobs'$/);
    fails({ TAS_HOST: 'http://x' }, 'TAS_HOST', "TAS_HOST: must be a host name or an IP address, got 'http://x'");
    assert.equal(loadConfig({ TAS_HOST: '::' }, CWD).host, '::');
  });

  test('process.env is the default environment', () => {
    const saved = process.env.TAS_QUEUE;
    process.env.TAS_QUEUE = 'from-process-env';
    try {
      assert.equal(loadConfig().queueName, 'from-process-env');
    } finally {
      if (saved === undefined) delete process.env.TAS_QUEUE;
      else process.env.TAS_QUEUE = saved;
    }
  });
});
