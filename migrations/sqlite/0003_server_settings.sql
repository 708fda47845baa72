-- Facts about the deployment itself, such as the fingerprint of the key-hashing pepper.
CREATE TABLE server_settings (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);
