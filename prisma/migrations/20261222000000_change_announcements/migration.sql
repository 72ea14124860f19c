-- Announce each committed change of a job, a worker or a tenant on the channel
-- tas_changes, so the API answers long polls when a change commits rather than at its
-- next periodic read (src/service/db/change-feed.ts listens). The payload is
-- "<schema> <topic>": job:<id> for a job row, pool for the workers, tenants; PostgreSQL
-- delivers them at commit, and folds repeats within one transaction.
-- Written by hand: triggers are not part of prisma/schema.prisma.

CREATE FUNCTION tas_announce_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('tas_changes', TG_TABLE_SCHEMA || ' job:' || OLD.id::text);
  ELSE
    PERFORM pg_notify('tas_changes', TG_TABLE_SCHEMA || ' job:' || NEW.id::text);
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION tas_announce_table() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tas_changes', TG_TABLE_SCHEMA || ' ' || TG_ARGV[0]);
  RETURN NULL;
END $$;

CREATE TRIGGER jobs_announce AFTER INSERT OR UPDATE OR DELETE ON jobs
  FOR EACH ROW EXECUTE FUNCTION tas_announce_job();
CREATE TRIGGER workers_announce AFTER INSERT OR UPDATE OR DELETE ON workers
  FOR EACH STATEMENT EXECUTE FUNCTION tas_announce_table('pool');
CREATE TRIGGER tenants_announce AFTER INSERT OR UPDATE OR DELETE ON tenants
  FOR EACH STATEMENT EXECUTE FUNCTION tas_announce_table('tenants');
