-- Pinned files (never evicted, kept for offline use) and per-block checksums (XXH64, hex) for fsck.
ALTER TABLE files ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE blocks ADD COLUMN sum TEXT;
CREATE INDEX files_accessed ON files (accessed_ms);
-- Local files (R44): they live only in the vault and are never uploaded.
ALTER TABLE files ADD COLUMN local INTEGER NOT NULL DEFAULT 0;
