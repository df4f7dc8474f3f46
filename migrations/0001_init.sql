-- The vault's first schema: cached files, their block states, their tags, and facts about the vault.
-- A file is identified by its key (case-sensitive, relative to the mount's prefix).
CREATE TABLE files (
  id           INTEGER PRIMARY KEY,
  key          TEXT    NOT NULL UNIQUE,
  size         INTEGER NOT NULL,            -- the file's real (local) size
  fetch_limit  INTEGER NOT NULL,            -- bytes [0, fetch_limit) may still be read from storage
  remote_etag  TEXT,                        -- version the local copy is based on; NULL: no object yet
  mode         INTEGER NOT NULL,
  uid          INTEGER NOT NULL,
  gid          INTEGER NOT NULL,
  mtime_ms     REAL    NOT NULL,
  dirty        INTEGER NOT NULL DEFAULT 0,  -- 1: data or metadata not yet in storage
  last_error   INTEGER NOT NULL DEFAULT 0,  -- RWRESULT of the last failed transfer, 0 if none
  accessed_ms  INTEGER NOT NULL
);

-- Present blocks only: an absent block has no row. state 1 = clean (equal to storage), 2 = dirty.
CREATE TABLE blocks (
  file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
  idx     INTEGER NOT NULL,
  state   INTEGER NOT NULL CHECK (state IN (1, 2)),
  PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;

CREATE TABLE tags (
  file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
  tag_id  INTEGER NOT NULL CHECK (tag_id BETWEEN 1 AND 53247),
  value   BLOB    NOT NULL CHECK (length(value) BETWEEN 1 AND 65531),
  PRIMARY KEY (file_id, tag_id)
) WITHOUT ROWID;

CREATE TABLE vault_info (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
