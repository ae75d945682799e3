-- Migration 0020's layout and shape: (topic text, key text) primary key under the database's collation, btree on expires_at, ON CONFLICT DO UPDATE, window function.
\set nb 100
WITH rows AS MATERIALIZED (SELECT g AS ord, gen_random_uuid() AS i, 'n' AS n, '' AS ti, '{"a":1,"b":"xxxxxxxxxxxxxxxxxxxx"}'::jsonb AS d, 'src' AS s, now() AS oc, '1764780000000000000-' || :client_id || '-' || nextval('kseq') AS k FROM generate_series(1,:nb) g), seen AS MATERIALIZED (SELECT w.ord, x.event_id, x."offset" FROM rows w CROSS JOIN LATERAL (SELECT x.event_id, x."offset" FROM k_old x WHERE x.topic = 'bench_topic_x' AND x.key = w.k AND x.expires_at > now() LIMIT 1) x),
fresh AS MATERIALIZED (SELECT w.*, row_number() OVER (ORDER BY w.ord) AS pos FROM rows w WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = w.ord)),
ins AS (INSERT INTO ev ("offset", id, name, topic_identifier, data, source, occurred_at) SELECT nextval('offs'), i, n, ti, d, s, oc FROM fresh),
claimed AS (INSERT INTO k_old AS x (topic, key, event_id, "offset", expires_at) SELECT 'bench_topic_x', f.k, f.i, f.pos, now() + interval '1 day' FROM fresh f
  ON CONFLICT (topic, key) DO UPDATE SET event_id = EXCLUDED.event_id WHERE x.expires_at <= now() RETURNING 1)
SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM seen);
