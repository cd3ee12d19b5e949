-- Housekeeping deletes the grants of client_credentials requests (connector_id '', one per
-- request, never a refresh token) once their access tokens are gone, oldest first; without
-- this index finding them would read every grant.
CREATE INDEX grants_of_clients_created_at ON grants (created_at) WHERE connector_id = '';
