-- Directory listings kept in the vault with the time they were taken, so a warm `ls` of a large directory
-- (and lookups of names it does not hold) need no request while the listing is younger than its lifetime.
CREATE TABLE listings (
  prefix    TEXT PRIMARY KEY,
  listed_ms INTEGER NOT NULL
);

CREATE TABLE listing_entries (
  prefix      TEXT    NOT NULL REFERENCES listings(prefix) ON DELETE CASCADE,
  name        TEXT    NOT NULL,
  kind        INTEGER NOT NULL CHECK (kind IN (0, 1)),  -- 0 file, 1 directory
  size        INTEGER NOT NULL,
  etag        TEXT    NOT NULL,
  modified_ms INTEGER NOT NULL,
  PRIMARY KEY (prefix, name)
) WITHOUT ROWID;
