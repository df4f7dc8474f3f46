-- What a HEAD taught about a listed name (POSIX attributes, symlink or not, xattrs), kept with the listing entry:
-- a warm walk of a large tree (ls -l, find, du) then needs no request at all while the listing is fresh.
ALTER TABLE listing_entries ADD COLUMN meta TEXT;
