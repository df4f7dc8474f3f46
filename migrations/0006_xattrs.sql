-- User extended attributes of a file, as the encoded s3fs `xattr` header value (NULL: none). They travel with
-- the file's other POSIX attributes, so a change uploads with the next upload like a chmod.
ALTER TABLE files ADD COLUMN xattrs TEXT;
