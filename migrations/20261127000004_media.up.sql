-- Images kept in the object store: one row per stored object, with who may see it.
CREATE TABLE media_object (
    key           text PRIMARY KEY CONSTRAINT media_object_key_check CHECK (key ~ '^[a-z0-9][a-z0-9/_.-]*$' AND key NOT LIKE '%..%'),
    content_type  text NOT NULL,
    byte_size     bigint NOT NULL CHECK (byte_size >= 0),
    width         integer,
    height        integer,
    -- NULL: public (showcase images); otherwise only this user (and admins) may fetch it.
    owner_user_id uuid REFERENCES app_user (user_id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX media_object_owner_idx ON media_object (owner_user_id);
