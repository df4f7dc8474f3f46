-- Deletes of objects journaled by unlink and sent later, batched (DeleteObjects, up to 1000 keys a request): an
-- `rm -r` waits for no request per file and works offline. A row stays until storage has confirmed the delete, so
-- a crash leaves it for the next start to send.
CREATE TABLE deletes (
  key       TEXT    PRIMARY KEY,
  queued_ms INTEGER NOT NULL
) WITHOUT ROWID;
