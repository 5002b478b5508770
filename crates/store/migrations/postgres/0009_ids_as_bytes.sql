-- Event ids and trace ids as bytes (docs/architecture/audit-log.md, "Ids as bytes"): a UUID in
-- its canonical text (lowercase, hyphenated) is stored as its 16 bytes, 32 lowercase hex digits
-- (a W3C trace id) as 0xFE and their 16 bytes, any other text of 16 bytes as 0xFF and the text,
-- and any other text as its bytes. Reads write the text back as it was: the hashes over it do not
-- change. The id's unique index and the trace index are rebuilt with the column.

CREATE FUNCTION pg_temp.stored_id(t TEXT) RETURNS BYTEA LANGUAGE SQL IMMUTABLE AS $$
    SELECT CASE
        WHEN t ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            THEN decode(replace(t, '-', ''), 'hex')
        WHEN t ~ '^[0-9a-f]{32}$' THEN '\xfe'::BYTEA || decode(t, 'hex')
        WHEN octet_length(t) = 16 THEN '\xff'::BYTEA || convert_to(t, 'UTF8')
        ELSE convert_to(t, 'UTF8')
    END
$$;

ALTER TABLE audit_events
    ALTER COLUMN id TYPE BYTEA USING pg_temp.stored_id(id),
    ALTER COLUMN trace_id TYPE BYTEA USING pg_temp.stored_id(trace_id);

DROP FUNCTION pg_temp.stored_id(TEXT);
