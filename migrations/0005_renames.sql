-- Directory renames in progress (copy every key, then delete the sources): a crash in the middle leaves a row
-- here, and the next mount finishes the rename before serving.
CREATE TABLE renames (
  id          INTEGER PRIMARY KEY,
  from_prefix TEXT    NOT NULL,
  to_prefix   TEXT    NOT NULL,
  started_ms  INTEGER NOT NULL
);
