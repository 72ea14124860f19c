/**
 * Migration files in Prisma's layout (`prisma/migrations/<timestamp>_<name>/migration.sql`)
 * and their checksums, computed the way Prisma's schema engine does, so a database
 * migrated here and one migrated by `prisma migrate deploy` hold the same history.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's migrations (the service runs from source through tsx). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../prisma/migrations/', import.meta.url));

export interface MigrationFile {
  /** The directory name, e.g. `20261122000000_init`: the `migration_name` column. */
  readonly name: string;
  readonly sql: string;
  /** sha256 of `sql`, 64 lowercase hex digits: the `checksum` column. */
  readonly checksum: string;
}

/**
 * Every directory of `dir` holding a `migration.sql`, in name order (Prisma's order:
 * the names start with a UTC timestamp). Other entries (`migration_lock.toml`) are skipped.
 */
export function readMigrations(dir: string = MIGRATIONS_DIR): MigrationFile[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort()
    .flatMap((name) => {
      const file = join(dir, name, 'migration.sql');
      let isFile = false;
      try {
        isFile = statSync(file).isFile();
      } catch {
        return [];
      }
      if (!isFile) return [];
      const sql = readFileSync(file, 'utf8');
      return [{ name, sql, checksum: renderChecksum(sql) }];
    });
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Prisma's `render_checksum`: sha256, each byte as two hex digits. */
export function renderChecksum(sql: string): string {
  return sha256(sql).toString('hex');
}

/**
 * Prisma's `script_matches_checksum`: the script matches when its checksum, or that of
 * the script with CRLF turned into LF or LF into CRLF, equals the recorded one (git may
 * change line endings on checkout). Checksums recorded by old Prisma versions dropped
 * the leading zero of each byte (prisma-engines#1887); those are compared that way.
 */
export function checksumMatches(sql: string, recorded: string): boolean {
  const variants = [sql, sql.replace(/\r\n/g, '\n'), sql.replace(/\n/g, '\r\n')];
  const oldFormat = recorded.length !== 0 && recorded.length !== 64;
  return variants.some((variant) => {
    const digest = sha256(variant);
    const rendered = oldFormat
      ? Array.from(digest, (byte) => byte.toString(16)).join('')
      : digest.toString('hex');
    return rendered === recorded;
  });
}
