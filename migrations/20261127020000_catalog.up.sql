-- The model catalog. The reviewed source of truth is catalog/catalog.toml; these tables are
-- its loaded copy (so every instance, the API and SQL reports see the same facts). Items that
-- disappear from the file are retired (active = false), never deleted: runs refer to them.

CREATE TABLE catalog_provider (
    slug          text PRIMARY KEY CONSTRAINT catalog_provider_slug_check CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name          text NOT NULL,
    display_order integer NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER catalog_provider_updated_at BEFORE UPDATE ON catalog_provider
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE catalog_model (
    slug           text PRIMARY KEY CONSTRAINT catalog_model_slug_check CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name           text NOT NULL,
    provider_slug  text NOT NULL REFERENCES catalog_provider (slug),
    description    text NOT NULL,
    subcategories  text[] NOT NULL,
    capabilities   text[] NOT NULL,
    image_to_image boolean NOT NULL,
    max_megapixels real NOT NULL CONSTRAINT catalog_model_megapixels_check CHECK (max_megapixels > 0),
    nsfw_rating    text NOT NULL,
    aspect_ratios  text[] NOT NULL,
    modes          text[] NOT NULL,
    display_order  integer NOT NULL,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER catalog_model_updated_at BEFORE UPDATE ON catalog_model
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE model_variant (
    model_slug    text NOT NULL REFERENCES catalog_model (slug),
    slug          text NOT NULL CONSTRAINT model_variant_slug_check CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name          text NOT NULL,
    endpoint      text NOT NULL,
    is_default    boolean NOT NULL,
    display_order integer NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT model_variant_pkey PRIMARY KEY (model_slug, slug)
);
-- At most one active default variant per model.
CREATE UNIQUE INDEX model_variant_one_default_key ON model_variant (model_slug) WHERE is_default AND active;
CREATE TRIGGER model_variant_updated_at BEFORE UPDATE ON model_variant
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A (variant, mode) without a row is not offered.
CREATE TABLE variant_price (
    model_slug   text NOT NULL,
    variant_slug text NOT NULL,
    mode         text NOT NULL CONSTRAINT variant_price_mode_check CHECK (mode IN ('2k', '4k')),
    credits      bigint NOT NULL CONSTRAINT variant_price_credits_check CHECK (credits > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT variant_price_pkey PRIMARY KEY (model_slug, variant_slug, mode),
    CONSTRAINT variant_price_variant_fkey FOREIGN KEY (model_slug, variant_slug) REFERENCES model_variant (model_slug, slug)
);
CREATE TRIGGER variant_price_updated_at BEFORE UPDATE ON variant_price
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE use_case (
    slug                  text PRIMARY KEY CONSTRAINT use_case_slug_check CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name                  text NOT NULL,
    description           text NOT NULL,
    subcategories         text[] NOT NULL,
    showcase_prompt       text NOT NULL,
    showcase_aspect_ratio text NOT NULL,
    display_order         integer NOT NULL,
    active                boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER use_case_updated_at BEFORE UPDATE ON use_case
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Editorial content of one comparison page: a pair in canonical order, for one use case
-- ('' = the pair's general page).
CREATE TABLE comparison_content (
    model_a       text NOT NULL REFERENCES catalog_model (slug),
    model_b       text NOT NULL REFERENCES catalog_model (slug),
    use_case_slug text NOT NULL,
    title         text NOT NULL,
    intro         text NOT NULL,
    strengths_a   text[] NOT NULL,
    strengths_b   text[] NOT NULL,
    verdict       text NOT NULL,
    faq           jsonb NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT comparison_content_pkey PRIMARY KEY (model_a, model_b, use_case_slug),
    CONSTRAINT comparison_content_pair_check CHECK (model_a <> model_b)
);
CREATE TRIGGER comparison_content_updated_at BEFORE UPDATE ON comparison_content
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Every load of the catalog file that changed something (by content hash).
CREATE TABLE catalog_revision (
    catalog_revision_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    content_hash        text NOT NULL,
    source              text NOT NULL,
    loaded_at           timestamptz NOT NULL DEFAULT now()
);

-- One showcase image per (use case, model) and prompt, generated once through the model's
-- provider. The row is the claim: whoever inserts it (or takes over a stale claim) generates.
CREATE TABLE showcase_image (
    use_case_slug text NOT NULL,
    model_slug    text NOT NULL,
    prompt        text NOT NULL,
    status        text NOT NULL CONSTRAINT showcase_image_status_check CHECK (status IN ('pending', 'ready', 'failed')),
    provider      text,
    media_key     text REFERENCES media_object (key),
    width         integer,
    height        integer,
    error         text,
    attempts      integer NOT NULL DEFAULT 0,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT showcase_image_pkey PRIMARY KEY (use_case_slug, model_slug),
    CONSTRAINT showcase_image_ready_check CHECK (status <> 'ready' OR (media_key IS NOT NULL AND width > 0 AND height > 0))
);
CREATE TRIGGER showcase_image_updated_at BEFORE UPDATE ON showcase_image
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
