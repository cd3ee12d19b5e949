-- A login sent to an upstream (GitHub, an OIDC provider) remembers, until the browser comes
-- back, which connector it went to, the state it carries and what that connector must keep
-- (nonce, PKCE verifier), as JSON.
ALTER TABLE auth_requests ADD COLUMN upstream TEXT;
