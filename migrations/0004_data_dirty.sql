-- Whether a changed file's data (not only its attributes) differs from storage: attribute-only changes are
-- uploaded by copying the object onto itself, without moving its data. Existing rows count as data-changed.
ALTER TABLE files ADD COLUMN data_dirty INTEGER NOT NULL DEFAULT 1;
UPDATE files SET data_dirty = dirty;
