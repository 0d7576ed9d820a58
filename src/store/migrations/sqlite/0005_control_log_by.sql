-- Who asked for a change of controller (a restore's API key user);
-- NULL for the control loop's own decisions.
ALTER TABLE control_log ADD COLUMN by_user TEXT;
