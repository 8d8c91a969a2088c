-- One commit per hop (DESIGN §5): a consumed message's outgoing messages are
-- kept with its record and published straight after the commit; a redelivery
-- (the ack never happened) publishes them again from here, under the same ids.
ALTER TABLE processed_messages ADD COLUMN outgoing JSONB;

-- Everything the fleet has sent, by either path: the outbox (work no consumed
-- message carries, and publishes that failed) and consumed messages' records.
-- Bodies in base64 (sealed ones as sealed). For operators and the tests'
-- invariants; services never read it.
CREATE VIEW sent_messages AS
    SELECT exchange, routing_key, message_id, correlation_id, reply_to, headers, kind, sealed,
           replace(encode(body, 'base64'), E'\n', '') AS body_base64, producer AS source, created_at
    FROM outbox
    UNION ALL
    SELECT m ->> 'exchange', m ->> 'routing_key', m ->> 'message_id', m ->> 'correlation_id', m ->> 'reply_to', m -> 'headers',
           m ->> 'kind', (m ->> 'sealed')::boolean, m ->> 'body', p.consumer, p.processed_at
    FROM processed_messages p, jsonb_array_elements(p.outgoing) m
    WHERE p.outgoing IS NOT NULL;
