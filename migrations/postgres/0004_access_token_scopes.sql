-- An access token from a refresh that asked for fewer scopes (RFC 6749 §6) carries those
-- scopes, as a JSON array; NULL, as on every row written before, is its grant's scopes.
ALTER TABLE access_tokens ADD COLUMN scopes TEXT;
