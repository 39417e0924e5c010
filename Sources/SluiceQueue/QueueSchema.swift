/// The queue's tables, as numbered migrations applied in order at start-up. Each runs once: the
/// version applied so far is kept in `sluice_schema`, read and advanced under an advisory lock so two
/// processes starting together do not both migrate. A database whose version is newer than this
/// binary's last migration is refused (an older binary must not write a schema it does not know).
enum QueueSchema {
    /// The advisory lock's key ("sluice" in ASCII).
    static let lockKey: Int64 = 0x736c_7569_6365

    static let migrations: [String] = [
        // 1: jobs, their one result, the workers.
        """
        CREATE TABLE sluice_jobs (
            id uuid PRIMARY KEY,
            model text NOT NULL,
            payload bytea NOT NULL,
            state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL CHECK (max_attempts > 0),
            worker text,
            lease_until timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            error text,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            started_at timestamptz,
            finished_at timestamptz
        );
        CREATE INDEX sluice_jobs_queued ON sluice_jobs (model, created_at, id) WHERE state = 'queued';
        CREATE INDEX sluice_jobs_running ON sluice_jobs (lease_until) WHERE state = 'running';
        CREATE TABLE sluice_results (
            job uuid PRIMARY KEY REFERENCES sluice_jobs (id) ON DELETE CASCADE,
            image bytea NOT NULL,
            worker text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE TABLE sluice_workers (
            id text PRIMARY KEY,
            model text NOT NULL,
            device text NOT NULL,
            budget bigint,
            last_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
            current_job uuid
        );
        """,
        // 2: a job may make several images (a batch: one row each, numbered from 0); the latest live
        // preview of a running job, kept apart so progress notifications stay small.
        """
        ALTER TABLE sluice_results ADD COLUMN n integer NOT NULL DEFAULT 0;
        ALTER TABLE sluice_results DROP CONSTRAINT sluice_results_pkey;
        ALTER TABLE sluice_results ADD PRIMARY KEY (job, n);
        CREATE TABLE sluice_previews (
            job uuid PRIMARY KEY REFERENCES sluice_jobs (id) ON DELETE CASCADE,
            step integer NOT NULL,
            image bytea NOT NULL
        );
        """,
    ]

    static var latest: Int { migrations.count }
}
