-- Operators' actions on a site that are not changes of controller (those
-- are in control_log): maintenance on and off, with who did them. A site
-- is in maintenance when its last maintenance action is 'maintenance_on'.
CREATE TABLE site_audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    edge_id TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL,
    action  TEXT    NOT NULL,
    by_user TEXT
);
CREATE INDEX site_audit_by_edge ON site_audit (edge_id, seq);
