-- text_c.sql with random UUID keys (as text).
\set nb 100
WITH rows AS MATERIALIZED (SELECT g AS ord, gen_random_uuid() AS i, 'n' AS n, '' AS ti, '{"a":1,"b":"xxxxxxxxxxxxxxxxxxxx"}'::jsonb AS d, 'src' AS s, now() AS oc, '1764780000000000000-' || :client_id || '-' || nextval('kseq') AS k0, gen_random_uuid()::text AS k FROM generate_series(1,:nb) g), seen AS MATERIALIZED (SELECT w.ord, x.event_id, x."offset" FROM rows w CROSS JOIN LATERAL (SELECT x.event_id, x."offset" FROM k_textc x WHERE x.topic_id = '6f1c2b9e-3a4d-4e5f-8a7b-1c2d3e4f5a6b'::uuid AND x.key = w.k LIMIT 1) x),
ins AS (INSERT INTO ev ("offset", id, name, topic_identifier, data, source, occurred_at) SELECT nextval('offs'), i, n, ti, d, s, oc FROM rows WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = rows.ord)),
claimed AS (INSERT INTO k_textc (topic_id, key, event_id, "offset", expires_at) SELECT '6f1c2b9e-3a4d-4e5f-8a7b-1c2d3e4f5a6b'::uuid, w.k, w.i, w.ord, now() + interval '1 day' FROM rows w WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = w.ord))
SELECT (SELECT count(*) FROM seen);
