-- One 16-byte digest of (topic, key) as the primary key, BRIN on expires_at, plain INSERT (migration 0021's layout, the digest as one uuid).
\set nb 100
WITH rows AS MATERIALIZED (SELECT g AS ord, gen_random_uuid() AS i, 'n' AS n, '' AS ti, '{"a":1,"b":"xxxxxxxxxxxxxxxxxxxx"}'::jsonb AS d, 'src' AS s, now() AS oc, gen_random_uuid() AS h FROM generate_series(1,:nb) g),
seen AS MATERIALIZED (SELECT w.ord, x.event_id, x."offset" FROM rows w CROSS JOIN LATERAL (SELECT x.event_id, x."offset" FROM k_one x WHERE x.digest = w.h LIMIT 1) x),
ins AS (INSERT INTO ev ("offset", id, name, topic_identifier, data, source, occurred_at) SELECT nextval('offs'), i, n, ti, d, s, oc FROM rows WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = rows.ord)),
claimed AS (INSERT INTO k_one (digest, event_id, "offset", expires_at) SELECT w.h, w.i, w.ord, now() + interval '1 day' FROM rows w WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = w.ord))
SELECT (SELECT count(*) FROM seen);
