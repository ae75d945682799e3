-- 100 events per statement, no keys.
\set nb 100
WITH rows AS MATERIALIZED (SELECT g AS ord, gen_random_uuid() AS i, 'n' AS n, '' AS ti, '{"a":1,"b":"xxxxxxxxxxxxxxxxxxxx"}'::jsonb AS d, 'src' AS s, now() AS oc, '1764780000000000000-' || :client_id || '-' || nextval('kseq') AS k FROM generate_series(1,:nb) g), ins AS (INSERT INTO ev ("offset", id, name, topic_identifier, data, source, occurred_at) SELECT nextval('offs'), i, n, ti, d, s, oc FROM rows) SELECT 1;
