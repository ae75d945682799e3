-- Fifty topic tables, each also a partition of one parent list-partitioned by topic, and an
-- offsets table: the shapes run.sh compares (see run.sh's header).
CREATE TABLE allev (topic text NOT NULL, "offset" bigint NOT NULL, id uuid NOT NULL,
    name text NOT NULL, data jsonb NOT NULL, occurred_at timestamptz NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()) PARTITION BY LIST (topic);
DO $$ BEGIN FOR i IN 0..49 LOOP
    EXECUTE format('CREATE TABLE lt%s (LIKE allev INCLUDING DEFAULTS)', i);
    EXECUTE format('ALTER TABLE lt%s ADD PRIMARY KEY ("offset")', i);
    EXECUTE format('CREATE INDEX ON lt%s (name, "offset")', i);
    EXECUTE format('ALTER TABLE allev ATTACH PARTITION lt%s FOR VALUES IN (%L)', i, 't' || i);
END LOOP; END $$;
CREATE TABLE xoff (name text PRIMARY KEY, reserved bigint NOT NULL DEFAULT 0);
INSERT INTO xoff SELECT 't' || i, 0 FROM generate_series(0, 49) i;
