-- Connectors created through Dex's gRPC API or `lanyard admin connectors` (Dex's
-- storage.Connector). `config` is the connector's JSON settings sealed with the
-- key-encryption key (they hold client secrets and bind passwords); never stored in clear.
CREATE TABLE connectors (
    id TEXT PRIMARY KEY,
    connector_type TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Dex's ResourceVersion: 1 on creation, one more on every update.
    resource_version BIGINT NOT NULL,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- One row counting every change to `connectors`, bumped in the change's transaction: each
-- replica reads it before serving a connector and reopens what changed when it moved.
CREATE TABLE connectors_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO connectors_generation (id, generation) VALUES (1, 0);
